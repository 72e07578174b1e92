"""Probe 11: a crafted Flower checkpoint's history with negative counts and norms far from 1 (adversary C).
load_checkpoint checks types, fractions and non-negative losses/seconds; are the counts and norms in range?"""
import tempfile
from pathlib import Path

from ssgd.distributed.flower import FlowerRunConfig
from ssgd.distributed.flower.checkpoint import load_checkpoint, save_checkpoint
from ssgd.distributed.flower.task import make_model, param_arrays

cfg = FlowerRunConfig.from_mapping({"num-rounds": 3, "model": "mlp"})
w = param_arrays(make_model(cfg))
p = Path(tempfile.mkdtemp()) / "checkpoint.pt"
hist = [{"round": 0, "test_acc": 0.1, "test_loss": 2.3, "accepted": 0, "rejected": 0, "failed": 0, "norms": [],
         "rejections": [], "failures": []},
        {"round": 1, "test_acc": 0.9, "test_loss": 0.3, "accepted": -7, "rejected": -1000000, "failed": -3,
         "norms": [[-1, 1e300], [2, -5.0]], "rejections": [], "failures": [], "seconds": 1.0}]
save_checkpoint(p, 1, w, hist, cfg.to_dict())
try:
    ck = load_checkpoint(p, cfg.to_dict(), reference=w)
    print("accepted:", ck["history"][1])
except Exception as e:
    print("refused:", type(e).__name__, str(e)[:120])
