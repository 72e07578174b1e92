"""Probe q1: seeded LocalNoiseMod keys its noise by (seed, node id, ledger release number). The node id is
assigned by the SuperLink (the adversary); the release number of a fresh ledger starts at 1 on every node.
Two nodes running the same app (same seed), each with its OWN ledger, that the server gives the same node id,
draw the same noise at the same release number. Node A, release 1, a model with a NaN weight: the step fails,
the release is N alone. Node B (its own data, its own ledger), release 1, the real model: u_B + N.
The difference is node B's unit vector, noise-free."""
import os
import tempfile

import numpy as np

from common import ask, context, dp_app, model

RUN = {"num-rounds": 1, "mode": "fedsgd", "model": "mlp", "seed": 0}
d = tempfile.mkdtemp()
app, w = dp_app(min_sigma=1.0, seed=1234), model(RUN)  # the same app (same seed) on both nodes
nan = {n: a.copy() for n, a in w.items()}
nan["net.1.weight"][0, 0] = np.nan
req = {"batch-size": 1, "seed": 7, "server-round": 1, "ssgd-dp-noise-multiplier": 1.0}
SERVER_ID = 4242  # the SuperLink hands both nodes this id
ctx_a = context({"partition-id": 0, "privacy-ledger": os.path.join(d, "a.json")}, RUN, node_id=SERVER_ID)
ctx_b = context({"partition-id": 1, "privacy-ledger": os.path.join(d, "b.json")}, RUN, node_id=SERVER_ID)
r1 = ask(app, ctx_a, nan, req)   # node A: noise only
r2 = ask(app, ctx_b, w, req)     # node B: u_B + the same noise
assert not r1.has_error() and not r2.has_error()
flat = lambda r: np.concatenate([np.asarray(a.numpy(), np.float64).ravel() for a in r.content["arrays"].values()])
u = flat(r2) - flat(r1)

import torch
from ssgd.distributed.flower import FlowerRunConfig
from ssgd.distributed.flower.task import load_arrays, local_update, make_model, node_share
cfg = FlowerRunConfig.from_mapping(RUN)
x, y = node_share(cfg, 1, 3)
g, _, _ = local_update(load_arrays(make_model(cfg), w), x, y, mode="fedsgd", batch_size=1, local_steps=1, client_lr=1,
                       generator=torch.Generator().manual_seed(7 * 1_000_003 + 1 * 1_009 + 1))
gt = np.concatenate([v.astype(np.float64).ravel() for v in g.values()])
gt /= np.linalg.norm(gt)
print(f"node B: |difference| = {np.linalg.norm(u):.6f}; cos(difference, B's true unit gradient) = "
      f"{u @ gt / np.linalg.norm(u):.6f}; noise std per entry was 2.0")
