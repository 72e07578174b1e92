"""Probe q2: a batch larger than the share cycles through it (fix of red team 2 finding 3). At batch-size B equal
to the share size n (or a multiple of it) the batch is every example of the share exactly B/n times, whatever the
seed: the unit vector no longer depends on the server's seed. Elsewhere it does. A server that asks each
batch-size twice (two seeds) and compares the replies reads n off the batch size where they agree.
Default node (fedsgd), Dirichlet partition (run config), so n depends on the node's labels."""
import time

import numpy as np

from common import ask, context, model, plain_app

RUN = {"num-rounds": 1, "mode": "fedsgd", "model": "mlp", "seed": 0, "partition": "dirichlet", "alpha": 0.3}
NC = {"num-partitions": 40, "partition-id": 5}
app, w = plain_app(), model(RUN)
ctx = context(NC, RUN)
queries = 0


def unit(b, seed):
    global queries
    queries += 1
    r = ask(app, ctx, w, {"batch-size": b, "seed": seed, "server-round": 1})
    assert not r.has_error(), r.error.reason
    return np.concatenate([np.asarray(a.numpy(), np.float64).ravel() for a in r.content["arrays"].values()])


def d(b):
    return float(np.linalg.norm(unit(b, 1) - unit(b, 2)))


t = time.time()
coarse = list(range(64, 8193, 128))
dc = [d(b) for b in coarse]
b0 = coarse[int(np.argmin(dc))]
fine = [b for b in range(max(1, b0 - 140), min(8192, b0 + 140) + 1)]
df = [d(b) for b in fine]
multiple = fine[int(np.argmin(df))]
# the agreeing batch size is a multiple of n: n is its smallest divisor at which two seeds still agree
tol = 1e3 * min(df)
found = next(k for k in range(1, multiple + 1) if multiple % k == 0 and d(k) <= tol)

from ssgd.distributed.flower import FlowerRunConfig
from ssgd.distributed.flower.task import node_share
n = len(node_share(FlowerRunConfig.from_mapping(RUN), NC["partition-id"], NC["num-partitions"])[1])
print(f"true share size {n}; multiple {multiple}; found {found} (cross-seed distance there {min(df):.2e}, median elsewhere "
      f"{np.median(df):.2e}); {queries} replies, {time.time() - t:.0f}s")
