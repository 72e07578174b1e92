"""Probe 5: a delta-mode node (node config ssgd-mode=delta, no DP) sends (w'-w)/|w'-w| and never w', so that
the server does not learn the modulus. But the server chooses the model and `client-lr` (any float > 0), and
w' = fl(w - lr*g) is rounded to float32: with one weight set to exactly 1.0, that coordinate of the unit vector
is exactly 0 iff lr*|g_i| is below half an ulp of 1 -- a threshold test on |g_i|. Bisecting lr over rounds
(same batch: the server's seed and round) gives |g_i|; one more reply gives u_i; |g| = |g_i| / |u_i|.
Default node apart from ssgd-mode=delta; local-steps=1 (the node's minimum)."""
import math
import sys

import numpy as np
import torch

from common import ask, context, model, plain_app

RUN = {"num-rounds": 1, "mode": "delta", "model": "mlp", "seed": 0}
NODE = {"ssgd-mode": "delta"}
BATCH = int(sys.argv[1]) if len(sys.argv) > 1 else 32
app = plain_app()
ctx = context(NODE, RUN)
w = model(RUN)
PROBE = ("net.5.bias", 3)
w["net.5.bias"][PROBE[1]] = np.float32(1.0)
n_asked = 0


def reply(lr):
    global n_asked
    n_asked += 1
    r = ask(app, ctx, w, {"ssgd-mode": "delta", "batch-size": BATCH, "local-steps": 1, "client-lr": float(lr),
                          "seed": 0, "server-round": 1})
    assert not r.has_error(), r.error.reason
    return {k: np.asarray(a.numpy()) for k, a in r.content["arrays"].items()}


u = reply(1.0)
ui = float(u[PROBE[0]][PROBE[1]])
sign = -np.sign(ui)  # delta = -lr*g: the sign of g_i
half_ulp = 2.0 ** -25 if sign > 0 else 2.0 ** -24  # 1 - x rounds to 1 below 2^-25; 1 + x below 2^-24
lo, hi = -40.0, 10.0  # log2(lr): coordinate zero at lo, nonzero at hi
assert reply(2 ** lo)[PROBE[0]][PROBE[1]] == 0 and reply(2 ** hi)[PROBE[0]][PROBE[1]] != 0
for _ in range(40):
    mid = (lo + hi) / 2
    if reply(2 ** mid)[PROBE[0]][PROBE[1]] == 0:
        lo = mid
    else:
        hi = mid
lr_star = 2 ** hi
gi = half_ulp / lr_star
g_norm_est = gi / abs(ui)

# ground truth: the gradient of the same batch at the same model (what the node computed)
from ssgd.distributed.flower import FlowerRunConfig
from ssgd.distributed.flower.task import load_arrays, local_update, make_model, node_share

cfg = FlowerRunConfig.from_mapping(RUN)
m = load_arrays(make_model(cfg), w)
x, y = node_share(cfg, 0, 3)
gen = torch.Generator().manual_seed(0 * 1_000_003 + 1 * 1_009 + 0)
g, _, _ = local_update(m, x, y, mode="fedsgd", batch_size=BATCH, local_steps=1, client_lr=1.0, generator=gen)
true = math.sqrt(sum(float((v.astype(np.float64) ** 2).sum()) for v in g.values()))
print(f"batch {BATCH}: server's |g| = {g_norm_est:.6g}, true |g| = {true:.6g}, relative error "
      f"{abs(g_norm_est - true) / true:.1e}, after {n_asked} replies (no error reply, no metric)")
