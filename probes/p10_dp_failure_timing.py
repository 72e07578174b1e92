"""Probe 10: under node-local DP a non-finite step releases noise on a zero vector (no error leaves). Its
*timing*, in process: the failure path (SSGDMod raises, log.error on the node, zeros) against a normal step,
with the crafted first-layer column (pixel 400 weights 1e38: the step overflows iff the pixel is bright).
The threat model says timing is outside the guarantee; this measures the size of that channel."""
import statistics
import time

from common import ask, context, dp_app, model

import logging
logging.disable(logging.CRITICAL)
RUN = {"num-rounds": 1, "mode": "fedsgd", "model": "mlp", "seed": 0}
app, w = dp_app(min_sigma=1.0), model(RUN)
bad = {n: a.copy() for n, a in w.items()}
bad["net.1.weight"][:, 400] = 1e38
ts = {"normal": [], "failing": []}
for i in range(40):
    for name, m in (("normal", w), ("failing", bad)):
        ctx = context({}, RUN)
        t = time.perf_counter()
        r = ask(app, ctx, m, {"batch-size": 1, "seed": i, "server-round": 1, "ssgd-dp-noise-multiplier": 1e6})
        ts[name].append(time.perf_counter() - t)
        assert not r.has_error()
for k, v in ts.items():
    print(f"{k}: median {statistics.median(v) * 1e3:.2f} ms, p10-p90 {sorted(v)[4] * 1e3:.2f}-{sorted(v)[35] * 1e3:.2f} ms")
