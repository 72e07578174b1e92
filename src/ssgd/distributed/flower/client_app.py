"""The ready SSGD ``ClientApp``: load the global model, compute the raw update on this node's
share of the data, and let :class:`SSGDMod` turn it into a unit vector.

Loaded by a SuperNode as ``ssgd.distributed.flower.client_app:app``. The node's share comes
from its node config (``partition-id``, ``num-partitions``); everything else from the run
config (:class:`~ssgd.distributed.flower.FlowerRunConfig`) and, per round, the message's
ConfigRecord. ``fault`` in the node config makes the node misbehave (see :mod:`.faults`).

The train function reports ``num-examples`` and ``train-loss`` to the mods; :class:`SSGDMod`
lets them leave only when the node config's ``allowed-metrics`` names them (default: none).
Evaluate messages (the loss and accuracy of this node's data for a model the server chose)
are answered only with node config ``allow-evaluate=true``.
"""

from __future__ import annotations

import torch

from flwr.app import Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from . import keys
from .config import FlowerRunConfig
from .faults import FaultMod
from .mod import ssgd_mod
from .policy import NodePolicy
from .task import dataset, evaluate_arrays, local_update, load_arrays, make_model, node_share, partition_of
from .validation import arrays_from_record, record_from_arrays

__all__ = ["app", "train", "evaluate"]

app = ClientApp(mods=[FaultMod(), ssgd_mod])


def _conf(msg) -> dict:
    return dict(msg.content["config"]) if "config" in msg.content.config_records else {}


@app.train()
def train(msg: Message, context) -> Message:
    cfg = FlowerRunConfig.from_mapping(context.run_config)
    pid, num = partition_of(context.node_config)
    conf = _conf(msg)
    rnd = int(conf.get(keys.ROUND, 0))
    model = make_model(cfg)
    load_arrays(model, arrays_from_record(msg.content["arrays"]))
    x, y = node_share(cfg, pid, num)
    gen = torch.Generator().manual_seed(int(conf.get(keys.SEED, cfg.seed)) * 1_000_003 + rnd * 1_009 + pid)
    arrays, loss, used = local_update(
        model, x, y, mode=str(conf.get(keys.MODE, cfg.mode)), batch_size=int(conf.get(keys.BATCH_SIZE, cfg.batch_size)),
        local_steps=int(conf.get(keys.LOCAL_STEPS, cfg.local_steps)),
        client_lr=float(conf.get(keys.CLIENT_LR, cfg.client_lr)), generator=gen)
    content = RecordDict({"arrays": record_from_arrays(arrays),
                          "metrics": MetricRecord({"num-examples": used, "train-loss": loss})})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context) -> Message:
    if not NodePolicy.from_node_config(context.node_config).allow_evaluate:
        raise PermissionError("this node does not evaluate models for the server (node config allow-evaluate=false)")
    cfg = FlowerRunConfig.from_mapping(context.run_config)
    pid, num = partition_of(context.node_config)
    data = dataset(cfg.dataset, cfg.data_dir)
    idx = torch.arange(pid, data.x_test.shape[0], num)  # this node's share of the test split
    acc, loss = evaluate_arrays(make_model(cfg), arrays_from_record(msg.content["arrays"]), data.x_test[idx],
                                data.y_test[idx])
    content = RecordDict({"metrics": MetricRecord({"num-examples": int(idx.numel()), "eval-acc": acc,
                                                   "eval-loss": loss})})
    return Message(content=content, reply_to=msg)
