#!/usr/bin/env python
"""Regenerate the result tables in README.md and docs/ from docs/results/*.json (ssgd.experiments.readme).

    python scripts/update_tables.py           # rewrite the generated sections
    python scripts/update_tables.py --check   # exit 1 when a document is out of date
    python scripts/update_tables.py --leakage-run results/leakage-grid/grid
        # first export docs/results/leakage.json from that grid's run folder (finished or not), and its
        # figures: budget_vs_psnr.png, privacy_vs_accuracy.png, grid_*.png -> leakage_<name>
    python scripts/update_tables.py --demo-run runs/demo-...
        # first export docs/results/demo.json from that `ssgd demo` run folder's summary.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssgd.experiments.demo import export_summary
from ssgd.experiments.leakage import export_results
from ssgd.experiments.readme import GENERATED_FILES, update_generated

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a section is out of date")
    ap.add_argument("--leakage-run", type=Path, metavar="DIR",
                    help="export docs/results/leakage.json from this `ssgd reproduce leakage` run folder first")
    ap.add_argument("--demo-run", type=Path, metavar="DIR",
                    help="export docs/results/demo.json from this `ssgd demo` run folder first")
    args = ap.parse_args()
    if args.demo_run is not None:
        if args.check:
            ap.error("--demo-run writes docs/results/demo.json; run it without --check")
        try:
            export_summary(args.demo_run, ROOT / "docs/results/demo.json")
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"docs/results/demo.json: from {args.demo_run}")
    if args.leakage_run is not None:
        if args.check:
            ap.error("--leakage-run writes docs/results/leakage.json; run it without --check")
        try:
            res = export_results(args.leakage_run, ROOT / "docs/results/leakage.json", figures_to=ROOT / "docs/results")
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"docs/results/leakage.json: {res['cells_done']} of {res['cells_total']} cells from {args.leakage_run}")
    stale = []
    for rel in GENERATED_FILES:
        try:
            status = update_generated(ROOT / rel, ROOT, check=args.check)
        except ValueError as e:  # a result file that is not what its command writes (ssgd.experiments.readme)
            print(f"error: {rel}: {e}", file=sys.stderr)
            return 2
        for name, state in status.items():
            print(f"{rel}: {name}: {state}")
            if state == "updated":
                stale.append(f"{rel}:{name}")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run python scripts/update_tables.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
