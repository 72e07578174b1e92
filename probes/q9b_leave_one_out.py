"""Probe q9b: as q9 at batch-size n-1 (no cycling needed): the seed picks the one example left out; the
difference of two replies names both labels (signs flipped). 15/15 pairs at min-batch-size 32."""
import numpy as np
import torch

from common import ask, context, model, plain_app

RUN = {"num-rounds": 1, "mode": "fedsgd", "model": "mlp", "seed": 0, "partition": "dirichlet", "alpha": 0.3}
NC = {"num-partitions": 40, "partition-id": 5, "min-batch-size": 32}
N_SHARE = 74  # from probe q2 (replies only)
B = N_SHARE - 1
app, w = plain_app(), model(RUN)
ctx = context(NC, RUN)


def duplicate(seed, rnd=1, pid=5):  # the server's offline replay of the node's draw
    gen = torch.Generator().manual_seed(seed * 1_000_003 + rnd * 1_009 + pid)
    return int(torch.randperm(N_SHARE, generator=gen)[-1])  # the example left out


def unit(seed):
    r = ask(app, ctx, w, {"batch-size": B, "seed": seed, "server-round": 1})
    assert not r.has_error(), r.error.reason
    return {n: np.asarray(a.numpy(), np.float64) for n, a in r.content["arrays"].items()}


from ssgd.distributed.flower import FlowerRunConfig
from ssgd.distributed.flower.task import node_share
_, y = node_share(FlowerRunConfig.from_mapping(RUN), 5, 40)  # ground truth only

flat = lambda u: np.concatenate([v.ravel() for v in u.values()])
hits = pairs = 0
seeds = list(range(40))
dups = {s: duplicate(s) for s in seeds}
for s1, s2 in zip(seeds[0::2], seeds[1::2]):
    i, j = dups[s1], dups[s2]
    if int(y[i]) == int(y[j]):
        continue
    u1, u2 = unit(s1), unit(s2)
    m = flat(u1) + flat(u2)
    d = {k: u1[k] - u2[k] for k in u1}
    coef = float(flat(d) @ m / (m @ m))
    dbias = d["net.5.bias"] - coef * (u1["net.5.bias"] + u2["net.5.bias"])
    got = (int(np.argmax(dbias)), int(np.argmin(dbias)))  # left out: signs flip
    pairs += 1
    hits += got == (int(y[i]), int(y[j]))
print(f"labels of the isolated pair recovered: {hits}/{pairs} pairs (2 replies each, batch {B} >= min-batch-size 32)")
