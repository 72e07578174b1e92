"""Probe 6 (for B > 1 the threshold gives the largest example's term: |g| to within a factor <= B): a DEFAULT fedsgd node (min-batch-size 1, no DP) and the float32 underflow of the softmax.
For a class k that is not the example's label, the gradient of the last-layer bias is g(b_k) = p_k / B with
p_k = exp(log p_k), and log p_k = b_k + c (c = W5[k].h - lse, a function of the node's example; lse does
not move while p_k is tiny). The server lowers b_k until that coordinate of the unit vector is exactly 0:
exp underflows at a fixed, known log-value T (calibrated on the server with the same torch), so the
threshold b* gives c = T - b*. At b_k = -50 the reply's u_k = exp(-50 + c) / B / |g|, hence |g|.
Batch 1 (the node's default minimum): |g| with the unit vector is the raw gradient."""
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

from common import ask, context, model, plain_app

RUN = {"num-rounds": 1, "mode": "fedsgd", "model": "mlp", "seed": 0}
B = int(sys.argv[1]) if len(sys.argv) > 1 else 1
app, ctx, w = plain_app(), context({}, RUN), model(RUN)
asked = 0


def reply(bk=None, k=None):
    global asked
    asked += 1
    ww = {n: a.copy() for n, a in w.items()}
    if bk is not None:
        ww["net.5.bias"][k] = np.float32(bk)
    r = ask(app, ctx, ww, {"batch-size": B, "seed": 0, "server-round": 1})
    assert not r.has_error(), r.error.reason
    return {n: np.asarray(a.numpy()) for n, a in r.content["arrays"].items()}


def calibrate():
    """Server side, offline: the log-probability below which the CE gradient of a logit is exactly 0."""
    lo, hi = -200.0, -50.0
    for _ in range(60):
        mid = (lo + hi) / 2
        z = torch.zeros(1, 10)
        z[0, 1] = mid
        z.requires_grad_(True)
        F.cross_entropy(z, torch.tensor([0])).backward()
        logp = float(torch.log_softmax(z.detach(), 1)[0, 1])
        if z.grad[0, 1] == 0:
            lo = mid
        else:
            hi = mid
    z = torch.zeros(1, 10)
    z[0, 1] = hi
    return float(torch.log_softmax(z, 1)[0, 1])


T = calibrate()
u0 = reply()
# a class absent from the batch: its bias coordinate can be driven to exactly 0 (a present class never is)
k = next(c for c in np.argsort(-u0["net.5.bias"]) if reply(-300.0, int(c))["net.5.bias"][int(c)] == 0)
k = int(k)
lo, hi = -300.0, -50.0  # b_k: coordinate zero at lo, nonzero at hi
assert reply(hi, k)["net.5.bias"][k] != 0
for _ in range(40):
    mid = (lo + hi) / 2
    if reply(mid, k)["net.5.bias"][k] == 0:
        lo = mid
    else:
        hi = mid
c = T - hi
uk = float(reply(-50.0, k)["net.5.bias"][k])
est = math.exp(-50.0 + c) / B / uk

from ssgd.distributed.flower import FlowerRunConfig
from ssgd.distributed.flower.task import load_arrays, local_update, make_model, node_share

cfg = FlowerRunConfig.from_mapping(RUN)
x, yy = node_share(cfg, 0, 3)
ww = {n: a.copy() for n, a in w.items()}
ww["net.5.bias"][k] = np.float32(-50.0)
g, _, _ = local_update(load_arrays(make_model(cfg), ww), x, yy, mode="fedsgd", batch_size=B, local_steps=1,
                       client_lr=1.0, generator=torch.Generator().manual_seed(1 * 1_009))
true = math.sqrt(sum(float((v.astype(np.float64) ** 2).sum()) for v in g.values()))
print(f"fedsgd batch {B}: calibrated T={T:.4f}; server's |g| = {est:.6g}, true |g| = {true:.6g} (at the probe "
      f"model), relative error {abs(est - true) / true:.1e}, {asked} replies")
