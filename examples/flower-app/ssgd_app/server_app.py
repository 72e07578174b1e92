"""The server: SSGDStrategy checks every update (a unit vector of the model's shapes) and steps with a server lr."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from flwr.app import ConfigRecord
from flwr.serverapp import ServerApp

from ssgd.distributed.flower import SSGDStrategy
from ssgd.distributed.flower.validation import arrays_from_record, record_from_arrays

from .task import load_data, make_model

app = ServerApp()


@app.main()
def main(grid, context) -> None:
    cfg = context.run_config
    model = make_model()
    arrays = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    strategy = SSGDStrategy(mode="fedsgd", server_lr=float(cfg["server-lr"]), update_keys=list(arrays),
                            client_config={"batch-size": int(cfg["batch-size"])})
    result = strategy.start(grid, record_from_arrays(arrays), num_rounds=int(cfg["num-rounds"]), timeout=120,
                            train_config=ConfigRecord())
    final = arrays_from_record(result.arrays)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in final.items()})
    _, _, x_test, y_test = load_data(0, 1)
    with torch.no_grad():
        acc = float((model(x_test).argmax(1) == y_test).float().mean())
    accepted = [len(strategy.rounds[r]["accepted"]) for r in sorted(strategy.rounds)]
    out = Path(str(cfg["out-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps({"status": "finished", "test_acc": acc, "accepted": accepted}))
