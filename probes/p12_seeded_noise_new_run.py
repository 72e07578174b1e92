"""Probe 12: LocalNoiseMod(seed=...) derives its noise from (seed, node id, round) and refuses a repeated round
-- recorded in Context.state, which a new run (series) does not share. Run 1, round 1: a model with a NaN weight
(the step fails -> the release is noise on a zero vector: exactly N). Run 2 (fresh Context), round 1: the real
model -> u + N. The difference is the node's unit vector, noise-free, whatever sigma (even with a ledger)."""
import numpy as np

from common import ask, context, dp_app, model

RUN = {"num-rounds": 1, "mode": "fedsgd", "model": "mlp", "seed": 0}
app, w = dp_app(min_sigma=1.0, seed=1234), model(RUN)
nan = {n: a.copy() for n, a in w.items()}
nan["net.1.weight"][0, 0] = np.nan
req = {"batch-size": 1, "seed": 7, "server-round": 1, "ssgd-dp-noise-multiplier": 1.0}
r1 = ask(app, context({}, RUN), nan, req)   # run A
r2 = ask(app, context({}, RUN), w, req)     # run B, same round
assert not r1.has_error() and not r2.has_error()
flat = lambda r: np.concatenate([np.asarray(a.numpy(), np.float64).ravel() for a in r.content["arrays"].values()])
u = flat(r2) - flat(r1)

import torch
from ssgd.distributed.flower import FlowerRunConfig
from ssgd.distributed.flower.task import load_arrays, local_update, make_model, node_share
cfg = FlowerRunConfig.from_mapping(RUN)
x, y = node_share(cfg, 0, 3)
g, _, _ = local_update(load_arrays(make_model(cfg), w), x, y, mode="fedsgd", batch_size=1, local_steps=1, client_lr=1,
                       generator=torch.Generator().manual_seed(7 * 1_000_003 + 1 * 1_009))
gt = np.concatenate([v.astype(np.float64).ravel() for v in g.values()])
gt /= np.linalg.norm(gt)
print(f"|difference| = {np.linalg.norm(u):.6f}; cos(difference, true unit gradient) = {u @ gt / np.linalg.norm(u):.6f}; "
      f"noise std per entry was {2 * 1.0}")
