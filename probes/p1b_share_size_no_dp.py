"""Probe 1b: default (non-DP) packaged ClientApp. 'num-examples' is opt-in because it reveals the node's share
size; the batch-size refusal (NOT_SENT vs an update) gives the exact share size anyway by binary search.
Under a Dirichlet partition with a tiny alpha (run config), the share is a set of whole classes chosen by the
server's seed, so the share size is a sum of the node's per-class counts."""
import sys

from common import ask, context, model, outcome, plain_app

part = sys.argv[1] if len(sys.argv) > 1 else "iid"
alpha = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
RUN = {"num-rounds": 1, "mode": "fedsgd", "model": "mlp", "seed": seed, "partition": part, "alpha": alpha}
app, arrays = plain_app(), model(RUN)
ctx = context({}, RUN)


def probe(b):
    r = ask(app, ctx, arrays, {"batch-size": b, "seed": 0, "server-round": 1})
    return not r.has_error()


lo, hi, n = 1, 1 << 20, 0
while lo < hi:
    mid = (lo + hi + 1) // 2
    ok = probe(mid)
    n += 1
    lo, hi = (mid, hi) if ok else (lo, mid - 1)
from ssgd.distributed.flower import FlowerRunConfig
from ssgd.distributed.flower.task import node_share

x, y = node_share(FlowerRunConfig.from_mapping(RUN), 0, 3)
print(f"partition={part} alpha={alpha} seed={seed}: server's estimate {lo} after {n} requests; true share {len(y)}; "
      f"label counts {[int((y == c).sum()) for c in range(10)]}")
