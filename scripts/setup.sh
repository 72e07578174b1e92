#!/usr/bin/env bash
# Set up .venv with ssgd and everything it needs, on a fresh machine. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip_q() { python -m pip install -q "$@" 2>&1 | grep -v -E "is ignored: it is neither|^WARNING: Location" || true; }
# The CPU build of torch first: a bare 'torch' requirement pulls a multi-GB CUDA build.
if ! python -c "import torch" >/dev/null 2>&1; then
  pip_q "torch==2.13.0"
fi
pip_q -e ".[all,dev]"
python -c "import torch, ssgd, flwr, opacus" || { echo "setup failed: see pip output above" >&2; exit 1; }
# Fashion-MNIST (the paper's dataset) from Debian's package, when this machine allows it.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
      || echo "note: could not install dataset-fashion-mnist; Fashion-MNIST runs need --data-dir" >&2
  else
    echo "note: Fashion-MNIST not found; as root: apt-get install dataset-fashion-mnist (or pass --data-dir)" >&2
  fi
fi
