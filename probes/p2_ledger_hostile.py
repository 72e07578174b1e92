"""Probe 2: a node's privacy-ledger file is hostile input (adversary C, or a past bug). The threat model says
a damaged ledger refuses every release. (a) a ledger with one huge count: ReleaseBudget replays it one
accountant step at a time (PrivacyAccountant.step loops n times) while holding the ledger's exclusive lock.
(b) a server that alternates sigma (both above the node's minimum) grows the history by one entry per
release; every charge recomputes epsilon over the whole history."""
import json
import sys
import time
from pathlib import Path

from ssgd.privacy.node import ReleaseBudget

for n in (10**5, 10**6):
    t = time.time()
    try:
        ReleaseBudget.from_dict({"sigmas": [1000.0], "counts": [n]}, 10.0, 1e-5).charge(1000.0)
        what = "released"
    except ValueError as e:
        what = f"refused ({str(e)[:60]})"
    print(f"(a) ledger count {n:.0e}: {what} after {time.time() - t:.2f}s (10**12 would take ~{(time.time() - t) * 1e6 / n * 1e6 / 3600:.0f} h)")

for entries in (1000, 4000):
    sig = [1e3 if i % 2 else 1.001e3 for i in range(entries)]
    b = ReleaseBudget.from_dict({"sigmas": sig, "counts": [1] * entries}, 10.0, 1e-5)
    t = time.time()
    eps = b.charge(1e3)
    print(f"(b) history of {entries} alternating-sigma entries: one charge takes {time.time() - t:.2f}s; eps {eps:.3g}")
