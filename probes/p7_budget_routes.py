"""Probe 7: routes around LocalNoiseMod's release budget (default budget: max-epsilon 10 at delta 1e-5).
(a) alternating sigma between rounds; (b) inner refusals and message type train.x; (c) a fresh Context per
message (a malicious SuperLink gives every message a new run id); (d) a ledger reached through a symlink and
directly (two spellings of one file); (e) ledger tampering (count 0 / negative / huge / wrong types)."""
import json
import os
import tempfile
from pathlib import Path

from common import ask, context, dp_app, model, outcome

from ssgd.privacy import compute_epsilon
from ssgd.privacy.node import ReleaseBudget

RUN = {"num-rounds": 1, "mode": "fedsgd", "model": "mlp", "seed": 0}
app, w = dp_app(min_sigma=0.5), model(RUN)


def req(sigma, **extra):
    return {"batch-size": 32, "seed": 0, "server-round": 1, "ssgd-dp-noise-multiplier": sigma, **extra}


def released(rs):
    return sum(not r.has_error() for r in rs)


# (a) alternating sigma
ctx = context({}, RUN)
rs = [ask(app, ctx, w, req(1.0 if i % 2 else 0.5)) for i in range(20)]
sig = [1.0 if i % 2 else 0.5 for i in range(20)]
got = [s for s, r in zip(sig, rs) if not r.has_error()]
eps = ReleaseBudget(10.0, 1e-5, releases=[(s, 1) for s in got]).epsilon()
print(f"(a) alternating sigma 0.5/1.0: released at sigmas {got}, epsilon of those = {eps:.3f} (<= 10)")

# (b) inner refusal (mode) and train.x
ctx = context({}, RUN)
r1 = ask(app, ctx, w, req(1.0, **{"ssgd-mode": "delta"}))
try:
    r2 = ask(app, ctx, w, req(1.0), message_type="train.x")
    o2 = outcome(r2)
except ValueError as e:  # Flower refuses an unregistered action before any mod runs: no release
    o2 = f"Flower raises {e}"
st = dict(ctx.state.config_records["ssgd-release-budget"])
print(f"(b) inner refusal -> {outcome(r1)[:40]}; train.x -> {o2[:60]}; counted {sum(st['counts'])}")

# (c) a fresh Context per message
tot = 0
for i in range(5):
    c = context({}, RUN)
    tot += released([ask(app, c, w, req(1.0)) for _ in range(5)])
k = 0
while compute_epsilon(1.0, 1.0, k + 1, 1e-5) <= 10:
    k += 1
print(f"(c) 5 fresh Contexts (no privacy-ledger, the default): {tot} releases at sigma 1; the budget allows {k}")

# (d) one ledger, two spellings (symlink)
d = Path(tempfile.mkdtemp())
real = d / "ledger.json"
real.write_text(json.dumps({"format": "ssgd-release-ledger", "sigmas": [], "counts": []}))
os.symlink(real, d / "link.json")
rs = []
for i in range(6):
    path = real if i % 2 else d / "link.json"
    rs.append(ask(app, context({"privacy-ledger": str(path)}, RUN), w, req(1.0)))
print(f"(d) ledger via symlink and directly, alternating: {released(rs)} releases (budget {k}); "
      f"link is symlink now: {(d / 'link.json').is_symlink()}")

# (e) tampered ledgers
for name, data in [("count 0", {"sigmas": [1.0], "counts": [0]}), ("negative", {"sigmas": [1.0], "counts": [-5]}),
                   ("sigma str", {"sigmas": ["1"], "counts": [1]}), ("bool", {"sigmas": [1.0], "counts": [True]}),
                   ("sigma nan", {"sigmas": [float("nan")], "counts": [1]}),
                   ("sigma 0", {"sigmas": [0.0], "counts": [1]}),
                   ("format missing", {"sigmas": [], "counts": []})]:
    p = d / f"t-{name.replace(' ', '_')}.json"
    doc = dict(data) if name == "format missing" else {"format": "ssgd-release-ledger", **data}
    p.write_text(json.dumps(doc))
    r = ask(app, context({"privacy-ledger": str(p)}, RUN), w, req(1.0))
    print(f"(e) ledger {name}: {outcome(r)[:50]}")
