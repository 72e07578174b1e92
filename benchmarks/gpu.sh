#!/usr/bin/env bash
# One-shot GPU run: everything this project measures on a CUDA device, in at most ~8 minutes on one GPU.
#
#   benchmarks/gpu.sh RESULTS_DIR          # or: OUT=RESULTS_DIR benchmarks/gpu.sh
#   benchmarks/gpu.sh --dry-run [DIR]      # print the plan, run nothing (works without a GPU)
#   benchmarks/gpu.sh --help
#
# Steps (each under its own time limit; a failing step is recorded and the next one runs):
#   1. tests    the CUDA-parametrised tests (pytest -k cuda over the test files that have a cuda case)
#   2. bench    ssgd bench step --device cuda at 11.7M (resnet18) and 124M (gpt2) parameters, plus its 1B size
#               when it has one, with --models/--hooks when it has them; extra flags from $BENCH_STEP_ARGS
#   3. step-1b  the isolated step at ~1.1B parameters, SGD(foreach) vs SSGD, and SSGD's host syncs per step
#   4. whole    forward + backward + step, SGD vs SSGD, on ResNet-18 and the Table 2 MLP, and host syncs
#   5. ddp      the SSGD DDP hook over NCCL with two processes on one GPU (gloo with CUDA tensors if NCCL refuses)
#   6. table2   the batch >= 1024 cells of Table 2 (20 epochs, 3 seeds for SGD/SSGD(m)/NSGD), in the time left;
#               resumable (--resume) and written after every finished cell, with "partial" until the last
#
# Results (at most 8 files, flat, so that a device tool can bring them all back):
#   summary.md  run.log  bench_step.json  gpu_checks.json  table2.json  table2_report.md
#
# Fashion-MNIST for step 6 is looked up in --data-dir, $SSGD_FMNIST_DIR, /usr/share/datasets/fashion-mnist,
# ./.data/fashion-mnist (copy the four *-ubyte.gz files there to carry them); step 6 is skipped without it.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
OUTDIR="${OUT:-}"
DRY=0
BUDGET=480
DATA_DIR="${SSGD_FMNIST_DIR:-}"

usage() {
  sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  cat <<EOF
Options:
  --dry-run         print the plan and exit (no GPU needed)
  --budget SECONDS  total wall-time budget (default 480); table2 gets what the other steps leave
  --data-dir DIR    Fashion-MNIST IDX folder for the Table 2 cells
  -h, --help        this text
Environment: OUT (results folder), PYTHON (interpreter, default python3), BENCH_STEP_ARGS (extra flags for
ssgd bench step), SSGD_FMNIST_DIR.
EOF
}

die() { echo "gpu.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY=1 ;;
    --budget) [ $# -ge 2 ] || die "--budget needs a number of seconds, e.g. --budget 480"
              BUDGET="$2"; shift ;;
    --budget=*) BUDGET="${1#--budget=}" ;;
    --data-dir) [ $# -ge 2 ] || die "--data-dir needs a folder"; DATA_DIR="$2"; shift ;;
    --data-dir=*) DATA_DIR="${1#--data-dir=}" ;;
    -*) die "unknown option $1; see --help" ;;
    *) [ -z "${POSITIONAL:-}" ] || die "one results folder only, got '$POSITIONAL' and '$1'"
       POSITIONAL="$1"; OUTDIR="$1" ;;
  esac
  shift
done
case "$BUDGET" in ''|*[!0-9]*) die "--budget must be a whole number of seconds, got '$BUDGET'" ;; esac
[ "$BUDGET" -ge 120 ] || die "--budget $BUDGET is too short; give at least 120 seconds"

if [ -z "$DATA_DIR" ]; then
  for d in /usr/share/datasets/fashion-mnist "$REPO/.data/fashion-mnist"; do
    if [ -f "$d/train-images-idx3-ubyte.gz" ] || [ -f "$d/train-images-idx3-ubyte" ]; then DATA_DIR="$d"; break; fi
  done
fi

# step name, time limit (s), description
T_TESTS=90; T_BENCH=90; T_1B=40; T_WHOLE=40; T_DDP=60
T_FIXED=$((T_TESTS + T_BENCH + T_1B + T_WHOLE + T_DDP))
T_TABLE2=$((BUDGET - T_FIXED - 10))
plan() {
  echo "gpu.sh plan (budget ${BUDGET}s; results in ${OUTDIR:-<not set>}):"
  echo "  1. tests   (${T_TESTS}s)  pytest -k cuda on the test files with a cuda case"
  echo "  2. bench   (${T_BENCH}s)  ssgd bench step --device cuda --sizes resnet18,gpt2[,<1B size>] [--models mlp,convnet,resnet18] [--hooks] ${BENCH_STEP_ARGS:-}"
  echo "  3. step-1b (${T_1B}s)  benchmarks/gpu_checks.py step-1b   (~1.1B parameters, SGD vs SSGD, host syncs)"
  echo "  4. whole   (${T_WHOLE}s)  benchmarks/gpu_checks.py whole-step (ResNet-18 / MLP forward+backward+step)"
  echo "  5. ddp     (${T_DDP}s)  benchmarks/gpu_checks.py ddp        (SSGD hook, NCCL, 2 processes on GPU 0)"
  if [ "$T_TABLE2" -lt 30 ]; then
    echo "  6. table2  skipped: the budget leaves ${T_TABLE2}s"
  elif [ -n "$DATA_DIR" ]; then
    echo "  6. table2  (${T_TABLE2}s, or what is left)  ssgd reproduce table2 --device cuda --batch-sizes 1024,4096,8192 --epochs 20 --data-dir $DATA_DIR"
  else
    echo "  6. table2  skipped: no Fashion-MNIST found (give --data-dir or copy the IDX files to .data/fashion-mnist)"
  fi
}

[ -n "$OUTDIR" ] || { [ "$DRY" = 1 ] && { plan; exit 0; }; die "give a results folder (argument or \$OUT); see --help"; }
if [ "$DRY" = 1 ]; then plan; exit 0; fi

export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null || {
  echo "gpu.sh: no CUDA GPU is visible to $PY (torch.cuda.is_available() is False); run it on a GPU machine," \
       "or use --dry-run to see the plan" >&2
  exit 3
}
mkdir -p "$OUTDIR" || die "cannot create $OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
LOG="$OUTDIR/run.log"
SUMMARY="$OUTDIR/summary.md"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)
cd "$REPO"

{
  echo "# GPU run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  "$PY" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0))"
  echo
  echo "| step | status | seconds |"
  echo "|---|---|---|"
} > "$SUMMARY"
plan > "$LOG"

step() {  # step NAME LIMIT COMMAND...
  local name="$1" limit="$2"; shift 2
  local t0=$(date +%s)
  echo -e "\n===== $name (limit ${limit}s): $*" >> "$LOG"
  timeout --kill-after=10 "$limit" "$@" >> "$LOG" 2>&1
  local rc=$?
  local status="ok"
  [ $rc -eq 0 ] || status="failed (exit $rc)"
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && status="timed out after ${limit}s"
  echo "| $name | $status | $(( $(date +%s) - t0 )) |" >> "$SUMMARY"
  return 0
}

# 1. CUDA tests
mapfile -t CUDA_TESTS < <(grep -rl --include='test_*.py' '"cuda"' tests 2>/dev/null | sort)
step tests "$T_TESTS" "$PY" -m pytest -q -p no:xdist -p no:cacheprovider -k cuda "${CUDA_TESTS[@]}"

# 2. optimizer step benchmark (sizes the installed benchmark knows)
SIZES=$("$PY" - <<'EOF' 2>/dev/null
from ssgd.experiments.bench_step import SIZES
big = [k for k in SIZES if "1b" in k.lower()][:1]  # one 1B size (the benchmark may list aliases)
print(",".join(n for n in ["resnet18", "gpt2"] + big if n in SIZES))
EOF
)
# flags this version of the benchmark has: the whole training step (--models) and the norm-hook variant (--hooks)
BENCH_HELP=$(COLUMNS=200 "$PY" -m ssgd bench step --help 2>/dev/null)
EXTRA=()
grep -q -- "--models" <<<"$BENCH_HELP" && EXTRA+=(--models mlp,convnet,resnet18)
grep -q -- "--hooks" <<<"$BENCH_HELP" && EXTRA+=(--hooks)
step bench "$T_BENCH" "$PY" -m ssgd bench step --device cuda --sizes "${SIZES:-resnet18,gpt2}" --repeats 50 \
  --warmup 5 --no-progress --out "$WORK/bench" "${EXTRA[@]}" ${BENCH_STEP_ARGS:-}
[ -f "$WORK/bench/results.json" ] && cp "$WORK/bench/results.json" "$OUTDIR/bench_step.json"

# 3-5. the checks the benchmark does not cover
step step-1b "$T_1B" "$PY" benchmarks/gpu_checks.py step-1b --json "$OUTDIR/gpu_checks.json"
step whole "$T_WHOLE" "$PY" benchmarks/gpu_checks.py whole-step --json "$OUTDIR/gpu_checks.json"
step ddp "$T_DDP" "$PY" benchmarks/gpu_checks.py ddp --samples 20 --json "$OUTDIR/gpu_checks.json"

# 6. Table 2's large-batch cells in the time left
LEFT=$(( BUDGET - ($(date +%s) - START) - 10 ))
if [ -z "$DATA_DIR" ]; then
  echo "| table2 | skipped: no Fashion-MNIST (--data-dir) | 0 |" >> "$SUMMARY"
elif [ "$LEFT" -lt 30 ]; then
  echo "| table2 | skipped: ${LEFT}s left | 0 |" >> "$SUMMARY"
else
  step table2 "$LEFT" "$PY" -m ssgd reproduce table2 --device cuda --batch-sizes 1024,4096,8192 --epochs 20 \
    --data-dir "$DATA_DIR" --out "$WORK/table2" --no-progress
  [ -f "$WORK/table2/table2.json" ] && cp "$WORK/table2/table2.json" "$OUTDIR/table2.json"
  [ -f "$WORK/table2/report.md" ] && cp "$WORK/table2/report.md" "$OUTDIR/table2_report.md"
fi

{
  echo
  echo "Total $(( $(date +%s) - START )) s. Numbers: bench_step.json, gpu_checks.json, table2.json; log: run.log."
  [ -f "$OUTDIR/gpu_checks.json" ] && { echo; echo '```json'; cat "$OUTDIR/gpu_checks.json"; echo; echo '```'; }
} >> "$SUMMARY"
cat "$SUMMARY"
