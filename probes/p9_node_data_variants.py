"""Probe 9: can the run config or the message choose the node's data? Node: dataset mnist (default), data-dir "".
Every run config below names another dataset or a data-dir that does not exist; the node must either refuse
(fixed text) or compute on its own data (an update). A NOT_SENT would mean it tried to read the server's path."""
from common import ask, context, model, outcome, plain_app

BASE = {"num-rounds": 1, "mode": "fedsgd", "model": "mlp", "seed": 0}
app, w = plain_app(), model(BASE)
cases = [{"dataset": "fashion-mnist"}, {"Dataset": "fashion-mnist"}, {"DATASET": "cifar10"}, {" dataset": "digits"},
         {"data_set": "digits"}, {"data-dir": "/nonexistent"}, {"data_dir": "/nonexistent"}, {"DATA-DIR": "/nonexistent"},
         {"test-size": 1}, {"test_size": 1}, {"partition": "dirichlet", "alpha": 1e-3}, {"dataset": "mnist", "Dataset": "x"}]
for rc in cases:
    r = ask(app, context({}, {**BASE, **rc}), w, {"batch-size": 8, "seed": 0, "server-round": 1})
    print(f"run config {rc}: {outcome(r)[:60]}")
for extra in ({"dataset": "fashion-mnist"}, {"data-dir": "/nonexistent"}):
    r = ask(app, context({}, BASE), w, {"batch-size": 8, **extra})
    print(f"message field {extra}: {outcome(r)[:60]}")
r = ask(app, context({"dataset": "digits"}, {**BASE}), w, {"batch-size": 8})
print(f"node dataset digits, run config dataset default (mnist not named): {outcome(r)[:60]}")
