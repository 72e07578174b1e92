"""Leak audit of ``ssgd train --nodes N`` (issue 9): everything a rank sends through torch.distributed.

Two gloo ranks train for one epoch (``ssgd.experiments.ddp_train.train_ddp``, the code
``ssgd train --nodes 2`` runs) with every Python-level collective wrapped, so the test sees
each payload a rank hands to the network. docs/threat-model.md lists what may leave:

* in a training step: the SSGD hook's all-reduce of this rank's unit vector (norm 1 over the
  model, or per tensor in layer scope) -- under ``--dp`` that vector plus this rank's noise
  share, and nothing un-noised;
* once per epoch: rank 0's public evaluation row (lr, test/validation metrics, epsilon,
  seconds) as one float64 tensor, never the training loss and never a pickle;
* at the end: rank 0's final parameters (the public model) and a 0/1 "replicas identical" flag.

(DDP's own C++ start-up collectives -- the parameter-shape check and the broadcast of rank 0's
initial model -- carry no training data and are documented there too.)
"""

from __future__ import annotations

import math

import pytest
import torch

import ddp_workers as W  # tests/distributed is on sys.path (pytest prepend import mode)


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    return W.spawn(W.run_audit, W.AUDIT_WORLD, tmp_path_factory.mktemp("audit"), "audit")


def _segments(log):
    """Split the log into training steps (each starting at its 'step' marker) and what follows the last step."""
    steps, cur, tail = [], None, []
    for e in log:
        if e["op"] == "step":
            cur = {"unit": e["unit"], "n_tensors": e["n_tensors"], "sent": [], "noise": []}
            steps.append(cur)
        elif e["op"] == "noise":
            cur["noise"].append(e)
        elif e["op"] == "all_reduce" and cur is not None and e["sent"].dtype == torch.float32 and \
                e["sent"].numel() > 1:
            cur["sent"].append(e)
        else:
            tail.append(e)
    return steps, tail


def _cat(ts):
    return torch.cat([t.flatten() for t in ts])


CASES = list(W.audit_configs())


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_rank_sends_only_unit_vectors_and_documented_control_values(audit, case):
    cfg = W.audit_configs()[case]
    dp = cfg.dp != "off"
    for rank, res in enumerate(audit):
        assert "crash" not in res, res.get("crash")
        log = res[case]["log"]
        ops = {e["op"] for e in log} - {"step", "noise"}
        assert ops <= {"all_reduce", "broadcast"}, ops  # no pickled objects, no gathers
        steps, tail = _segments(log)
        assert len(steps) == 4  # 192 training examples, batch 48, one epoch
        for st in steps:
            sent = _cat([e["sent"] for e in st["sent"]])
            unit = _cat(st["unit"])
            assert sent.numel() == unit.numel()  # the whole model, once, in the hook's all-reduces
            if not dp:
                # what leaves is this rank's unit vector (the buckets only permute its entries) ...
                torch.testing.assert_close(sent.sort().values, unit.sort().values, atol=1e-6, rtol=1e-5)
                # ... of norm 1 over the model (global) or 1 per tensor (layer)
                want = 1.0 if cfg.scope == "global" else float(st["n_tensors"])
                assert float(sent.double().square().sum()) == pytest.approx(want, rel=1e-4)
            else:
                # the buffers hold the unit vector before the noise, and what is sent is exactly the noised buffers
                before = _cat([t for e in st["noise"] for t in e["before"]])
                after = _cat([t for e in st["noise"] for t in e["after"]])
                torch.testing.assert_close(before.sort().values, unit.sort().values, atol=1e-6, rtol=1e-5)
                assert torch.equal(sent.sort().values, after.sort().values)
                # the noise in it has the std the true sensitivity asks for (issue 9 #6): sigma * Delta / sqrt(n)
                # per rank under secure aggregation, sigma * 2 sqrt(L)... per rank when each node noises itself
                L = st["n_tensors"]
                delta = (2.0 if cfg.dp == "node-local" else 1.0) * (math.sqrt(L) if cfg.scope == "layer" else 1.0)
                share = 1.0 if cfg.dp == "node-local" else 1.0 / math.sqrt(W.AUDIT_WORLD)
                want = cfg.noise_multiplier * delta * share
                assert float((after - before).std()) == pytest.approx(want, rel=0.03)
                assert not torch.allclose(sent.sort().values, unit.sort().values, atol=1e-2)  # never bare
        # after the steps: the epoch's public row, rank 0's final model, the replicas flag -- nothing else
        assert [e["op"] for e in tail] == ["broadcast", "broadcast", "all_reduce"], [e["op"] for e in tail]
        row_msg, model_msg, flag_msg = tail
        assert row_msg["src"] == 0 and model_msg["src"] == 0
        hist = res[case]["history"]
        keys = ["epoch", "lr", "test_loss", "test_acc", "val_acc", "val_loss"] + (["epsilon", "delta"] if dp else [])
        keys.append("seconds")
        assert row_msg["sent"].dtype == torch.float64 and row_msg["sent"].numel() == len(keys)
        if rank == 0:  # what rank 0 broadcasts is its public evaluation row, not its training loss
            assert row_msg["sent"].tolist() == pytest.approx([float(hist[-1][k]) for k in keys])
            assert torch.equal(model_msg["sent"], res[case]["final"])
        assert flag_msg["sent"].tolist() == [1.0]


@pytest.mark.slow
def test_training_loss_stays_on_its_rank(audit):
    for case in CASES:
        h0, h1 = audit[0][case]["history"], audit[1][case]["history"]
        strip = [{k: v for k, v in r.items() if k != "train_loss"} for r in h0]
        assert strip == [{k: v for k, v in r.items() if k != "train_loss"} for r in h1]
        # each rank reports the loss of its own shards: it was never combined across ranks
        assert h0[-1]["train_loss"] != h1[-1]["train_loss"]


@pytest.mark.slow
def test_batchnorm_statistics_stay_on_their_rank(audit):
    """Running means/variances are statistics of a rank's own data: DDP must not broadcast rank 0's
    (it would with broadcast_buffers=True, overwriting every rank's buffers with rank 0's at each forward)."""
    for rank, res in enumerate(audit):
        steps = [e for e in res["batchnorm"]["log"] if e["op"] == "step"]
        assert len(steps) == 4
        for e in steps:  # momentum 0.1: new = 0.9 * this rank's own old value + 0.1 * this rank's batch mean
            torch.testing.assert_close(e["bn_after"], 0.9 * e["bn_before"] + 0.1 * e["bn_batch_mean"],
                                       atol=1e-6, rtol=1e-5)
    b0, b1 = audit[0]["batchnorm"]["buffers"], audit[1]["batchnorm"]["buffers"]
    assert not torch.equal(b0["2.running_mean"], b1["2.running_mean"])
    assert torch.equal(audit[0]["batchnorm"]["final"], audit[1]["batchnorm"]["final"])  # parameters agree
