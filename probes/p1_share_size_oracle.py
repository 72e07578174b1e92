"""Probe 1: the ClientApp's 'share smaller than the batch' refusal is REFUSED, which LocalNoiseMod passes
through un-noised (it assumes REFUSED is decided from the request alone). A server that asks for a huge sigma
(accepted: >= the node's minimum; costs ~0 epsilon) and varies batch-size binary-searches the node's exact share
size -- a function of the node's data (its size; under a Dirichlet partition its label counts) -- outside the
mechanism, and without 'num-examples' in allowed-metrics."""
import sys
import time

from common import ask, context, dp_app, model, outcome

RUN = {"num-rounds": 1, "batch-size": 32, "mode": "fedsgd", "model": "mlp", "seed": 0,
       "partition": sys.argv[1] if len(sys.argv) > 1 else "iid", "alpha": float(sys.argv[2]) if len(sys.argv) > 2 else 0.5}
app, arrays = dp_app(min_sigma=1.0), model(RUN)
ctx = context({}, RUN)  # default node: max-epsilon 10, no allowed metrics
run_cfg = dict(RUN)
run_cfg.pop("batch-size")  # the mirror must agree with the request: leave it out of the run config
ctx = context({}, run_cfg)


def probe(b):
    r = ask(app, ctx, arrays, {"batch-size": b, "seed": 0, "server-round": 1, "ssgd-dp-noise-multiplier": 1e9})
    return not r.has_error(), outcome(r)


t0 = time.time()
lo, hi, n = 1, 1 << 20, 0
while lo < hi:  # largest b that is answered with an update
    mid = (lo + hi + 1) // 2
    ok, _ = probe(mid)
    n += 1
    lo, hi = (mid, hi) if ok else (lo, mid - 1)
from ssgd.distributed.flower import FlowerRunConfig
from ssgd.distributed.flower.task import node_share
from ssgd.privacy.node import ReleaseBudget
from ssgd.distributed.flower.privacy import LocalNoiseMod

x, y = node_share(FlowerRunConfig.from_mapping(RUN), 0, 3)
hist = ctx.state.config_records[LocalNoiseMod.BUDGET_KEY]
spent = ReleaseBudget.from_dict(dict(hist)).epsilon()
print(f"server's estimate of the node's share: {lo} examples after {n} requests; true share {len(y)}; "
      f"label counts {[int((y == c).sum()) for c in range(10)]}; node's own epsilon spent {spent:.3g}; "
      f"{time.time() - t0:.1f}s")
print("one refusal:", probe(lo + 1)[1])
