"""The ready SSGD ``ClientApp``: load the global model, compute the raw update on this node's
share of the data, and let :class:`SSGDMod` turn it into a unit vector.

Loaded by a SuperNode as ``ssgd.distributed.flower.client_app:app``. The node's share comes
from its node config (``partition-id``, ``num-partitions``), and so does its data
(``dataset``, ``data-dir``: a run config naming another dataset is refused, the run config's
``data-dir`` is the server's and never read here), and so is its share (``partition``, ``alpha``,
``partition-seed``: a run config naming another partition or alpha is refused, the run config's
``seed`` never chooses the share); the model from the run config
(:class:`~ssgd.distributed.flower.FlowerRunConfig`); every privacy-relevant value
(mode, batch size, local steps, ...) from the request :class:`SSGDMod` resolved against the
node's own policy (:mod:`.request`) -- never from the run config. ``fault`` in the node config
makes the node misbehave (see :mod:`.faults`).

The train function reports ``num-examples`` and ``train-loss`` to the mods; :class:`SSGDMod`
lets them leave only when the node config's ``allowed-metrics`` names them (default: none).
Evaluate messages (the loss and accuracy of this node's data for a model the server chose)
are answered only with node config ``allow-evaluate=true``.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from flwr.app import Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from . import request as node_request
from .config import FlowerRunConfig
from .faults import FaultMod
from .mod import NOT_SENT, REFUSED, error_reply, ssgd_mod
from .policy import NodePolicy
from .secret import batch_key, batch_seed
from .task import dataset, evaluate_arrays, local_update, load_arrays, make_model, node_share, partition_of
from .validation import arrays_from_record, record_from_arrays

__all__ = ["app", "train", "evaluate"]

log = logging.getLogger(__name__)

app = ClientApp(mods=[FaultMod(), ssgd_mod])


@app.train()
def train(msg: Message, context) -> Message:
    # every privacy-relevant value comes from the request SSGDMod resolved against this node's
    # policy -- never from the run config or the raw message (refused here without SSGDMod)
    req = node_request.get(context)
    # the node's own data: dataset and data-dir from its node config (the request carries them), never the run config's
    cfg = dataclasses.replace(FlowerRunConfig.from_mapping(context.run_config), dataset=req.dataset,
                              data_dir=req.data_dir)
    pid, num = partition_of(context.node_config)
    model = make_model(cfg)
    load_arrays(model, arrays_from_record(msg.content[node_request.ARRAYS]))
    # the node's own share: partition, alpha and partition-seed from its node config (the request carries them);
    # the run config's seed stays the server's (the model's initialisation), never the node's share
    x, y = node_share(dataclasses.replace(cfg, partition=req.partition, alpha=req.alpha, seed=req.partition_seed),
                      pid, num)
    if len(y) < req.min_batch_size:
        # the node's own partition settings could leave it fewer examples than its own min-batch-size allows
        # (one example's gradient gives its label away): refuse, never compute on fewer.
        # A fixed bit of the node's own share and setting, the same for every request: whether a node answers
        # never depends on a server-chosen threshold (batches are drawn with replacement, of any size)
        log.warning("train request refused: this node's share (%d examples) is below its min-batch-size %d",
                    len(y), req.min_batch_size)
        return error_reply(msg, REFUSED, "this node holds fewer examples than its min-batch-size")
    # the batch is drawn from the node's secret key mixed with the server's seed and round: the server can
    # neither replay the draw nor choose which examples a batch holds (red team 3 finding 5)
    gen = torch.Generator().manual_seed(batch_seed(batch_key(context.node_config), req.seed, req.round))
    arrays, loss, used = local_update(model, x, y, mode=req.mode, batch_size=req.batch_size,
                                      local_steps=req.local_steps, client_lr=req.client_lr, generator=gen)
    # delta mode: the update itself (never w', which SSGDMod would have to subtract from the server's w, rounding
    # against it), under the record name SSGDMod takes as an update
    record = node_request.DELTA if req.mode == "delta" else node_request.ARRAYS
    content = RecordDict({record: record_from_arrays(arrays),
                          "metrics": MetricRecord({"num-examples": used, "train-loss": loss})})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context) -> Message:
    policy = NodePolicy.from_node_config(context.node_config)
    if not policy.allow_evaluate:
        log.info("evaluate request refused: node config allow-evaluate=false")
        return error_reply(msg, REFUSED, "this node does not evaluate models for the server (allow-evaluate=false)")
    run_dataset = context.run_config.get("dataset", policy.dataset)
    if run_dataset != policy.dataset:
        return error_reply(msg, REFUSED, f"the run config's dataset {run_dataset!r} is not this node's "
                                         f"{policy.dataset!r} (node config dataset)")
    try:
        cfg = dataclasses.replace(FlowerRunConfig.from_mapping(context.run_config), dataset=policy.dataset,
                                  data_dir=policy.data_dir)
        pid, num = partition_of(context.node_config)
        data = dataset(cfg.dataset, cfg.data_dir)
        idx = torch.arange(pid, data.x_test.shape[0], num)  # this node's share of the test split
        acc, loss = evaluate_arrays(make_model(cfg), arrays_from_record(msg.content["arrays"]), data.x_test[idx],
                                    data.y_test[idx])
    except Exception as e:  # noqa: BLE001 - the text may carry data; it stays on the node
        return error_reply(msg, NOT_SENT, f"evaluate failed: {type(e).__name__}: {e}")
    content = RecordDict({"metrics": MetricRecord({"num-examples": int(idx.numel()), "eval-acc": acc,
                                                   "eval-loss": loss})})
    return Message(content=content, reply_to=msg)
