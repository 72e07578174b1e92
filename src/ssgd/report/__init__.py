"""Run folders, result files, checkpoints, tables and figures."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .io import (ConfigMismatchError, RunDirError, atomic_write_bytes, atomic_write_text, check_same_config,
                 check_saved_config, config_diff, jsonable, make_run_dir, new_figure, read_csv, save_figure, write_csv,
                 write_json)
from .validate import (LIST_LIMIT, ResultFileError, bounded_text, check_arrays, check_count, check_finite_state,
                       check_history, check_number, md_text)

__all__ = ["CheckpointError", "ConfigMismatchError", "RunDirError", "atomic_write_bytes", "atomic_write_text",
           "check_same_config", "check_saved_config", "config_diff", "jsonable", "load_checkpoint", "make_run_dir",
           "new_figure", "read_csv", "save_figure", "save_checkpoint", "write_csv", "write_json",
           "ResultFileError", "LIST_LIMIT", "bounded_text", "check_arrays", "check_count", "check_finite_state",
           "check_history", "check_number", "md_text"]
