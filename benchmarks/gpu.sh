#!/usr/bin/env bash
# One-shot GPU run on a single GPU: the optimizer's numbers (issue 20) in about 4 minutes, then the DP benchmark.
#
#   benchmarks/gpu.sh RESULTS_DIR          # or: OUT=RESULTS_DIR benchmarks/gpu.sh
#   benchmarks/gpu.sh --dry-run [DIR]      # print the plan, run nothing (works without a GPU)
#   benchmarks/gpu.sh --help
#
# Runs from a checkout without installing ssgd (PYTHONPATH=src) with `python3` (or $PYTHON). If a folder .wheels/
# is next to src/ ($WHEELS_DIR), its wheels are installed first (pip --no-deps --no-index, into a temporary folder
# on PYTHONPATH): the packages the GPU machine lacks (e.g. opacus, hypothesis, typer, tqdm).
#
# Steps (each under its own time limit; a failing step is recorded and the next one runs):
#   1. tests  the CUDA-parametrised tests (pytest -k cuda over the test files that have a cuda case)
#   2. bench  isolated step at 11.7M, 124M and 1B parameters, SGD(foreach) vs SSGD global/layer, momentum 0 and
#             0.9, with host syncs and ops per step (ssgd bench step --device cuda); extra flags: $BENCH_STEP_ARGS
#   3. whole  forward + backward + step, SGD vs SSGD: ResNet-18 at batch 256, the Table 2 MLP at batch 1024, with
#             the syncs of each (forward/backward and opt.step apart); the kernels of a step timed alone
#   4. ddp    the SSGD DDP hook over NCCL with two processes on one GPU (gloo with CUDA tensors if NCCL refuses)
#   5. dp     ssgd reproduce privacy --benchmark --device cuda (its own limit, --dp-budget; $DP_ARGS appended)
#   6. table2 (only with --table2) the batch >= 1024 cells of Table 2 in the time --table2-budget gives
#
# Results (at most 8 files, flat, so that a device tool can bring them all back):
#   summary.md  run.log  bench_step.json  gpu_checks.json  dp_benchmark.json  dp_report.md  [table2.json
#   table2_report.md]
#
# Fashion-MNIST for steps 5-6 is looked up in --data-dir, $SSGD_FMNIST_DIR, /usr/share/datasets/fashion-mnist,
# ./.data/fashion-mnist (copy the four *-ubyte.gz files there to carry them); those steps are skipped without it.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
OUTDIR="${OUT:-}"
DRY=0
DP_BUDGET=330
TABLE2=0
TABLE2_BUDGET=300
DATA_DIR="${SSGD_FMNIST_DIR:-}"
WHEELS_DIR="${WHEELS_DIR:-$REPO/.wheels}"

usage() {
  sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  cat <<EOF
Options:
  --dry-run               print the plan and exit (no GPU needed)
  --dp-budget SECONDS     time limit of the DP benchmark (default 330)
  --table2                also run Table 2's large-batch cells (off by default)
  --table2-budget SECONDS their time limit (default 300)
  --data-dir DIR          Fashion-MNIST IDX folder (DP benchmark, Table 2)
  -h, --help              this text
Environment: OUT (results folder), PYTHON (interpreter, default python3), BENCH_STEP_ARGS (extra flags for
ssgd bench step), DP_ARGS (extra flags for ssgd reproduce privacy), DP_WORKERS (its parallel runs, default 8: the whole
protocol took 103 s on one H200 with 8), SSGD_FMNIST_DIR, WHEELS_DIR.
EOF
}

die() { echo "gpu.sh: $*" >&2; exit 2; }
seconds() { case "$2" in ''|*[!0-9]*) die "$1 must be a whole number of seconds, got '$2'" ;; esac
            [ "$2" -ge 5 ] || die "$1 $2 is too short; give at least 5 seconds"; }

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY=1 ;;
    --dp-budget) [ $# -ge 2 ] || die "--dp-budget needs a number of seconds, e.g. --dp-budget 330"
                 DP_BUDGET="$2"; shift ;;
    --dp-budget=*) DP_BUDGET="${1#--dp-budget=}" ;;
    --table2) TABLE2=1 ;;
    --table2-budget) [ $# -ge 2 ] || die "--table2-budget needs a number of seconds"; TABLE2_BUDGET="$2"; shift ;;
    --table2-budget=*) TABLE2_BUDGET="${1#--table2-budget=}" ;;
    --data-dir) [ $# -ge 2 ] || die "--data-dir needs a folder"; DATA_DIR="$2"; shift ;;
    --data-dir=*) DATA_DIR="${1#--data-dir=}" ;;
    -*) die "unknown option $1; see --help" ;;
    *) [ -z "${POSITIONAL:-}" ] || die "one results folder only, got '$POSITIONAL' and '$1'"
       POSITIONAL="$1"; OUTDIR="$1" ;;
  esac
  shift
done
seconds --dp-budget "$DP_BUDGET"
seconds --table2-budget "$TABLE2_BUDGET"

if [ -z "$DATA_DIR" ]; then
  for d in /usr/share/datasets/fashion-mnist "$REPO/.data/fashion-mnist"; do
    if [ -f "$d/train-images-idx3-ubyte.gz" ] || [ -f "$d/train-images-idx3-ubyte" ]; then DATA_DIR="$d"; break; fi
  done
fi

# the optimizer's steps: 240 s in all
T_TESTS=60; T_BENCH=75; T_WHOLE=55; T_DDP=50
SIZES="11.7M,124M,1B"
plan() {
  echo "gpu.sh plan (results in ${OUTDIR:-<not set>}):"
  if [ -d "$WHEELS_DIR" ]; then echo "  0. wheels  pip install --no-deps --no-index $WHEELS_DIR/*.whl (into a temporary folder)"; fi
  echo "  1. tests   (${T_TESTS}s)  pytest -k cuda on the test files with a cuda case"
  echo "  2. bench   (${T_BENCH}s)  ssgd bench step --device cuda --sizes $SIZES --models none ${BENCH_STEP_ARGS:-}"
  echo "  3. whole   (${T_WHOLE}s)  benchmarks/gpu_checks.py whole-step (ResNet-18 b256, MLP b1024: forward+backward+step; kernel floor)"
  echo "  4. ddp     (${T_DDP}s)  benchmarks/gpu_checks.py ddp (SSGD hook, NCCL, 2 processes on GPU 0)"
  if [ -n "$DATA_DIR" ]; then
    echo "  5. dp      (${DP_BUDGET}s)  ssgd reproduce privacy --benchmark --device cuda --data-dir $DATA_DIR --no-progress --workers ${DP_WORKERS:-8} ${DP_ARGS:-}"
  else
    echo "  5. dp      skipped: no Fashion-MNIST found (give --data-dir or copy the IDX files to .data/fashion-mnist)"
  fi
  if [ "$TABLE2" = 1 ] && [ -n "$DATA_DIR" ]; then
    echo "  6. table2  (${TABLE2_BUDGET}s)  ssgd reproduce table2 --device cuda --batch-sizes 1024,4096,8192 --epochs 20 --data-dir $DATA_DIR"
  elif [ "$TABLE2" = 1 ]; then
    echo "  6. table2  skipped: no Fashion-MNIST found"
  else
    echo "  6. table2  off (pass --table2)"
  fi
  local total=$((T_TESTS + T_BENCH + T_WHOLE + T_DDP + DP_BUDGET + TABLE2 * TABLE2_BUDGET))
  echo "  at most ${total}s in all (optimizer steps $((T_TESTS + T_BENCH + T_WHOLE + T_DDP))s)"
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
plan > "$LOG"

if [ -d "$WHEELS_DIR" ]; then
  shopt -s nullglob
  WHEELS=("$WHEELS_DIR"/*.whl)
  shopt -u nullglob
  if [ ${#WHEELS[@]} -gt 0 ]; then
    echo -e "\n===== wheels: ${WHEELS[*]}" >> "$LOG"
    "$PY" -m pip install -q --no-deps --no-index --target "$WORK/site" "${WHEELS[@]}" >> "$LOG" 2>&1 \
      && export PYTHONPATH="$PYTHONPATH:$WORK/site" || echo "gpu.sh: installing .wheels failed (see run.log)" >&2
  fi
fi

{
  echo "# GPU run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  "$PY" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0))"
  echo
  echo "| step | status | seconds |"
  echo "|---|---|---|"
} > "$SUMMARY"

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
step tests "$T_TESTS" "$PY" -m pytest -q -p no:xdist -p no:cacheprovider --continue-on-collection-errors -k cuda \
  "${CUDA_TESTS[@]}"

# 2. the isolated optimizer step, with host syncs and ops per step
step bench "$T_BENCH" "$PY" -m ssgd bench step --device cuda --sizes "$SIZES" --models none --repeats 50 \
  --warmup 5 --no-progress --out "$WORK/bench" ${BENCH_STEP_ARGS:-}
[ -f "$WORK/bench/results.json" ] && cp "$WORK/bench/results.json" "$OUTDIR/bench_step.json"

# 3-4. the whole training step and the DDP hook
step whole "$T_WHOLE" "$PY" benchmarks/gpu_checks.py whole-step --json "$OUTDIR/gpu_checks.json"
step ddp "$T_DDP" "$PY" benchmarks/gpu_checks.py ddp --samples 20 --json "$OUTDIR/gpu_checks.json"
OPTIM_SECONDS=$(( $(date +%s) - START ))

# 5. the DP benchmark (its own command; only wired here)
if [ -z "$DATA_DIR" ]; then
  echo "| dp | skipped: no Fashion-MNIST (--data-dir) | 0 |" >> "$SUMMARY"
else
  step dp "$DP_BUDGET" "$PY" -m ssgd reproduce privacy --benchmark --device cuda --data-dir "$DATA_DIR" \
    --out "$WORK/dp" --no-progress --workers "${DP_WORKERS:-8}" ${DP_ARGS:-}
  [ -f "$WORK/dp/dp_benchmark.json" ] && cp "$WORK/dp/dp_benchmark.json" "$OUTDIR/dp_benchmark.json"
  [ -f "$WORK/dp/report.md" ] && cp "$WORK/dp/report.md" "$OUTDIR/dp_report.md"
fi

# 6. Table 2's large-batch cells, on request
if [ "$TABLE2" = 1 ]; then
  if [ -z "$DATA_DIR" ]; then
    echo "| table2 | skipped: no Fashion-MNIST (--data-dir) | 0 |" >> "$SUMMARY"
  else
    step table2 "$TABLE2_BUDGET" "$PY" -m ssgd reproduce table2 --device cuda --batch-sizes 1024,4096,8192 \
      --epochs 20 --data-dir "$DATA_DIR" --out "$WORK/table2" --no-progress
    [ -f "$WORK/table2/table2.json" ] && cp "$WORK/table2/table2.json" "$OUTDIR/table2.json"
    [ -f "$WORK/table2/report.md" ] && cp "$WORK/table2/report.md" "$OUTDIR/table2_report.md"
  fi
fi

{
  echo
  echo "Optimizer steps (1-4): ${OPTIM_SECONDS} s; total $(( $(date +%s) - START )) s. Raw numbers: bench_step.json,"
  echo "gpu_checks.json, dp_benchmark.json; log: run.log."
  echo
  "$PY" benchmarks/gpu_checks.py summary --bench "$OUTDIR/bench_step.json" --json "$OUTDIR/gpu_checks.json" 2>&1
} >> "$SUMMARY"
cat "$SUMMARY"
