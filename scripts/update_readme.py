#!/usr/bin/env python
"""Regenerate the README's result tables from docs/results/*.json (see ssgd.experiments.readme).

    python scripts/update_readme.py           # rewrite the generated sections
    python scripts/update_readme.py --check   # exit 1 when the README is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssgd.experiments.readme import update_readme

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a section is out of date")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = ap.parse_args()
    status = update_readme(args.readme, ROOT, check=args.check)
    for name, state in status.items():
        print(f"{name}: {state}")
    if args.check and any(s == "updated" for s in status.values()):
        print("README is out of date: run python scripts/update_readme.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
