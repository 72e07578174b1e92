"""The node: compute one batch's gradient; SSGDMod turns it into a unit vector before it leaves.

The batch size (and every other privacy-relevant value) comes from ``current_request(context)``:
the server's request as SSGDMod resolved it against this node's own policy (its --node-config).
Never read such a value from ``context.run_config`` (the server writes that).
"""

from __future__ import annotations

import torch
from flwr.app import Message, RecordDict
from flwr.clientapp import ClientApp
from torch.nn import functional as F

from ssgd.distributed.flower import SSGDMod, current_request
from ssgd.distributed.flower.validation import arrays_from_record, record_from_arrays

from .task import load_data, make_model

app = ClientApp(mods=[SSGDMod()])


@app.train()
def train(msg: Message, context) -> Message:
    req = current_request(context)  # batch size, round, seed: decided with the node's policy
    model = make_model()
    model.load_state_dict({k: torch.as_tensor(v) for k, v in arrays_from_record(msg.content["arrays"]).items()})
    pid, num = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    x, y, _, _ = load_data(pid, num)
    gen = torch.Generator().manual_seed(req.seed * 1_000_003 + req.round * 1_009 + pid)
    idx = torch.randperm(x.shape[0], generator=gen)[: req.batch_size]
    model.zero_grad()
    F.cross_entropy(model(x[idx]), y[idx]).backward()
    grads = {n: p.grad.detach().numpy().copy() for n, p in model.named_parameters()}
    return Message(RecordDict({"arrays": record_from_arrays(grads)}), reply_to=msg)
