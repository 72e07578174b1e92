"""Probe q3: ReleaseBudget / ledger with hostile stored values, and the cost of many sigma groups
(a server that asks a different sigma -- any value >= the node's minimum -- every release)."""
import json
import math
import time

from ssgd.privacy import ReleaseBudget

cases = {
    "nan sigma": {"sigmas": [float("nan")], "counts": [1]},
    "inf sigma": {"sigmas": [float("inf")], "counts": [5]},
    "neg sigma": {"sigmas": [-1.0], "counts": [1]},
    "zero sigma": {"sigmas": [0.0], "counts": [1]},
    "-0.0 and 0.0": {"sigmas": [-0.0, 0.0], "counts": [1, 1]},
    "huge count": {"sigmas": [1.0], "counts": [10**9]},
    "float count": {"sigmas": [1.0], "counts": [2.0]},
    "bool count": {"sigmas": [1.0], "counts": [True]},
    "dup sigma": {"sigmas": [1.0, 1.0], "counts": [1, 1]},
    "sigma 1e308": {"sigmas": [1e308], "counts": [10**9]},
    "tiny sigma": {"sigmas": [1e-300], "counts": [1]},
    "string sigma": {"sigmas": ["1.0"], "counts": [1]},
}
for name, data in cases.items():
    data = json.loads(json.dumps(data))  # as read back from the ledger file (json accepts NaN/Infinity)
    try:
        b = ReleaseBudget.from_dict(data, 10.0, 1e-5)
        t = time.perf_counter()
        try:
            e = b.charge(1.0)
            out = f"charged: eps={e:.4g}, count={b.count}"
        except Exception as ex:  # noqa: BLE001
            out = f"charge refused: {type(ex).__name__}: {str(ex)[:90]}"
        print(f"{name:14s} loaded ({b.releases[:2]}): {out}  [{time.perf_counter() - t:.3f}s]")
    except Exception as ex:  # noqa: BLE001
        print(f"{name:14s} refused on load: {type(ex).__name__}: {str(ex)[:100]}")

# sigma alternation: a new group per release (the server picks sigma = min * (1 + k*1e-9))
b = ReleaseBudget(10.0, 1e-5)
for groups in (10, 100, 1000):
    while len(b.releases) < groups:
        b.charge(100.0 * (1 + len(b.releases) * 1e-9))
    t = time.perf_counter()
    b.epsilon(100.0 * (1 + 0.5e-9))
    print(f"{groups:5d} sigma groups: one charge costs {time.perf_counter() - t:.3f}s; eps so far {b.epsilon():.3g}")
