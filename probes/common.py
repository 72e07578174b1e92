"""Shared probe helpers: messages and Contexts as a SuperNode hands them to the packaged ClientApp."""
from __future__ import annotations

import itertools
import os
import sys
import tempfile

# a private Flower home: LocalNoiseMod's default privacy ledger lives there, and a probe must not spend the
# budget of the user's own ~/.flwr
os.environ.setdefault("FLWR_HOME", tempfile.mkdtemp(prefix="ssgd-probe-flwr-"))

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "distributed"))
from flower_helpers import identity  # noqa: E402

_ids = itertools.count()


def dp_app(min_sigma=0.1, **kw):
    from flwr.clientapp import ClientApp

    from ssgd.distributed.flower import FaultMod, LocalNoiseMod, ssgd_mod
    from ssgd.distributed.flower.client_app import train

    app = ClientApp(mods=[FaultMod(), LocalNoiseMod(min_noise_multiplier=min_sigma, **kw), ssgd_mod])
    app.train()(train)
    return app


def plain_app():
    from ssgd.distributed.flower.client_app import app

    return app


def ask(app, ctx, arrays, config, message_type="train", records=None):
    from flwr.app import ConfigRecord, Message, RecordDict

    from ssgd.distributed.flower.local import with_message_id
    from ssgd.distributed.flower.validation import record_from_arrays

    identity()
    content = records if records is not None else RecordDict(
        {"arrays": record_from_arrays(arrays), "config": ConfigRecord(dict(config))})
    msg = with_message_id(Message(content, dst_node_id=ctx.node_id, message_type=message_type), f"m-{next(_ids)}")
    return app(msg, ctx)


def context(node_config, run_config, node_id=1001, state=None):
    from flwr.app import Context, RecordDict

    return Context(run_id=1, node_id=node_id, node_config={"partition-id": 0, "num-partitions": 3, **node_config},
                   state=state if state is not None else RecordDict(), run_config=dict(run_config))


def model(run):
    from ssgd.distributed.flower import FlowerRunConfig
    from ssgd.distributed.flower.task import make_model, param_arrays

    return param_arrays(make_model(FlowerRunConfig.from_mapping(run)))


def outcome(r):
    return ("error: " + r.error.reason) if r.has_error() else "update"
