"""CLI command groups, one module each, and the one-line error policy they share."""

from ._options import USER_ERRORS, user_errors

__all__ = ["USER_ERRORS", "user_errors"]
