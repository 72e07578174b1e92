#!/bin/bash
# Probe 4: `ssgd train --resume` loads the DP accountant state of checkpoint.pt unchecked (it checks the
# weights and `seconds`). A finished 2-epoch run's checkpoint with an emptied accountant, resumed with the
# same settings, rewrites privacy.json / report.md with the tampered epsilon.
set -e
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src
PY=/work/main/.venv/bin/python
T=$(mktemp -d /tmp/rt_train.XXXX)
ARGS="--optimizer ssgd --model mlp --batch-size 500 --dp node-local --shards 2 --noise-multiplier 1.0 --no-progress --lr 0.1 --epochs 2"
$PY -m ssgd.cli train $ARGS --out $T/run > /dev/null 2>&1
$PY - "$T/run" <<'PY'
import json, sys
print("before:", {k: json.load(open(f"{sys.argv[1]}/privacy.json")).get(k) for k in ("epsilon", "steps")})
PY
$PY - "$T/run/checkpoint.pt" <<'PY'
import sys, torch
p = sys.argv[1]
ck = torch.load(p, weights_only=True)
acc = ck["dp"]["accountant"]
print("accountant state:", {k: (v if not isinstance(v, dict) else {kk: str(vv)[:80] for kk, vv in v.items()}) for k, v in acc.items()})
acc["accountant"]["history"] = [(1.0, 1.0, 1)]   # one step instead of 16
acc["steps"] = 1
torch.save(ck, p)
PY
$PY -m ssgd.cli train $ARGS --out $T/run --resume > $T/resume.log 2>&1 && echo "resume rc 0" || { echo "resume refused:"; tail -3 $T/resume.log; }
$PY - "$T/run" <<'PY'
import json, sys
print("after:", {k: json.load(open(f"{sys.argv[1]}/privacy.json")).get(k) for k in ("epsilon", "steps")})
print([l for l in open(f"{sys.argv[1]}/report.md") if "privacy" in l])
PY
