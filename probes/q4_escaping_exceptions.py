"""Probe q4: exceptions that escape the node's mods, so that Flower's SuperNode replies with its own error text
``<class 'X'>:<'str(ex)'>`` instead of one of the three fixed texts (threat model: "every error text that leaves
a node is one of three fixed strings"). Server-controlled inputs only: the request's sigma (finite, above the node's
minimum) and the bytes of an Array in the request."""
import os
import tempfile

import numpy as np

from common import ask, context, dp_app, model, plain_app

RUN = {"num-rounds": 1, "mode": "fedsgd", "model": "mlp", "seed": 0}
RUN_D = dict(RUN, mode="delta")
w = model(RUN)


def show(name, app, ctx, arrays, cfg, records=None):
    try:
        r = ask(app, ctx, arrays, cfg, records=records)
        print(f"{name}: reply {'error: ' + r.error.reason if r.has_error() else 'update'}")
    except Exception as ex:  # noqa: BLE001 - what Flower's run_clientapp would turn into the error reason
        print(f"{name}: ESCAPES -> the SuperNode replies {str(type(ex)) + ':<' + repr(str(ex)) + '>'}")


d = tempfile.mkdtemp()
for sigma in (1e150, 1e155, 1e300):
    show(f"DP node, sigma={sigma:g}", dp_app(min_sigma=1.0), context({"privacy-ledger": os.path.join(d, "l.json")}, RUN),
         w, {"batch-size": 32, "ssgd-dp-noise-multiplier": sigma})


def crafted(data: bytes):
    from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

    from ssgd.distributed.flower.validation import record_from_arrays
    rec = record_from_arrays(w)
    name = next(iter(w))
    a = rec[name]
    rec[name] = Array(dtype=a.dtype, shape=a.shape, stype=a.stype, data=data)
    return RecordDict({"arrays": rec, "config": ConfigRecord({"batch-size": 32})})


for label, data in (("empty bytes", b""), ("truncated npy", np.lib.format.magic(1, 0) + b"\x10\x00{'descr'"),
                    ("garbage", b"\x00" * 64)):
    show(f"delta node, Array {label}", plain_app(), context({"ssgd-mode": "delta"}, RUN_D), w, {}, crafted(data))
    show(f"DP node, Array {label}", dp_app(min_sigma=1.0), context({"privacy-ledger": os.path.join(d, "m.json")}, RUN),
         w, {}, crafted(data))
    show(f"fedsgd node, Array {label}", plain_app(), context({}, RUN), w, {}, crafted(data))
