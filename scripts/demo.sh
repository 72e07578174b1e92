#!/usr/bin/env bash
# Quick start 1: set up, then run the main job (`ssgd demo`) on the embedded MNIST.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ssgd demo "$@"
