"""Run folders, result files, tables and figures."""

from .io import atomic_write_bytes, atomic_write_text, make_run_dir, save_figure, write_csv, write_json

__all__ = ["atomic_write_bytes", "atomic_write_text", "make_run_dir", "save_figure", "write_csv", "write_json"]
