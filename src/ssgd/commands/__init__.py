"""CLI command groups, one module each, and what they share: the one-line error policy and the run folder
(printed when it is opened; Ctrl-C then prints the command that resumes it)."""

from ._experiment_cli import interrupted_hint, open_run_dir
from ._options import USER_ERRORS, user_errors

__all__ = ["USER_ERRORS", "interrupted_hint", "open_run_dir", "user_errors"]
