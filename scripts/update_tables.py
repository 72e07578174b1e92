#!/usr/bin/env python
"""Regenerate the result tables in README.md and docs/ from docs/results/*.json (ssgd.experiments.readme).

    python scripts/update_tables.py           # rewrite the generated sections
    python scripts/update_tables.py --check   # exit 1 when a document is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssgd.experiments.readme import GENERATED_FILES, update_generated

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a section is out of date")
    args = ap.parse_args()
    stale = []
    for rel in GENERATED_FILES:
        for name, state in update_generated(ROOT / rel, ROOT, check=args.check).items():
            print(f"{rel}: {name}: {state}")
            if state == "updated":
                stale.append(f"{rel}:{name}")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run python scripts/update_tables.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
