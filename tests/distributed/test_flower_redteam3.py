"""Red team of 2026-12-04, third pass (outside the code): attacks on the fixes of red team 2.

RED TEAM: every test here FAILS on the code of commit d231785; the lead fixes the product and keeps the test.

1. **Seeded node-local noise is keyed by a server-assigned value.** ``LocalNoiseMod(seed=...)`` derives its noise
   from (seed, node id, the ledger's release number). The seed is the app's (every node running the app has the
   same one), a fresh ledger numbers its releases 1, 2, ... on every node, and the node id is assigned by the
   SuperLink, the adversary. Two nodes, each with its own ledger, given the same node id: node A's release 1 at
   a model with a NaN weight is the noise N alone (the failed step releases noise on a zero vector); node B's
   release 1 at the real model is u_B + N. The difference is node B's unit vector, noise-free (cos 1.000000 at
   sigma 1; probes/q1_seeded_noise_node_id.py). Nothing in the key is the node's own but the seed.
2. **The share size from the replies themselves, no metric and no refusal.** A batch larger than the share
   cycles through fresh permutations; at batch-size = n (the share size), or any multiple, the batch is every
   example of the share the same number of times whatever the server's seed, so two seeds give the same unit
   vector (distance 8e-8, elsewhere ~7e-3). Asking each batch-size under two seeds and taking the smallest
   agreeing divisor gives n exactly (Dirichlet share of 74 examples, 702 replies; probes/q2_share_size_seed_oracle.py).
   Under a run-config Dirichlet partition n is a function of the node's labels (red team 2 finding 3, which the
   cycling was meant to close). Sampling without replacement leaks it even below n (variance factor 1 - B/n).
3. **Error texts outside the three fixed strings** (low: request-determined, no data). A finite sigma >= 1e155
   (above any node minimum) makes ``ReleaseBudget.charge`` raise OverflowError, which ``LocalNoiseMod`` does not
   catch; a delta node sent an Array with empty bytes raises EOFError in ``SSGDMod`` before its guarded section.
   Both escape the ClientApp, so Flower's SuperNode replies with ``<class 'OverflowError'>:<'...'>``
   (probes/q4_escaping_exceptions.py).
4. **A ledger reached through a hard link forks** (low: the node owner's two names for one file). The symlink fix
   (realpath) does not cover it: two lock files, and the atomic rename splits the names (5 releases where the
   budget allows 3; probes/q6_ledger_hardlink.py).
5. **The server picks which examples are in a node's batch, so min-batch-size does not stop it isolating one
   example.** The batch generator is seeded by ``seed*1_000_003 + round*1_009 + pid`` (the server's seed and
   round; pid a small range), so the server replays every draw offline. At batch-size n+1 (n from finding 2;
   >= min-batch-size) the batch is the whole share plus one duplicate chosen by the seed; two seeds with
   duplicates i and j give replies whose difference, orthogonal to their mean, is (g_i - g_j)/N: its last-layer
   bias names both labels. 18/18 pairs at min-batch-size 32, 2 replies each (probes/q9_batch_composition_differencing.py).
   Batch-size n-1 (leave one out) does the same without cycling.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from flower_helpers import identity  # noqa: E402

RUN = {"num-rounds": 1, "mode": "fedsgd", "model": "mlp", "seed": 0}


def _context(node_config, run=RUN, node_id=1001):
    from flwr.app import Context, RecordDict

    return Context(run_id=1, node_id=node_id, node_config={"partition-id": 0, "num-partitions": 3, **node_config},
                   state=RecordDict(), run_config=dict(run))


def _message(arrays, config, i, records=None):
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    from ssgd.distributed.flower.local import with_message_id
    from ssgd.distributed.flower.validation import record_from_arrays

    identity()
    content = records if records is not None else RecordDict(
        {"arrays": record_from_arrays(arrays), "config": ConfigRecord(dict(config))})
    return with_message_id(Message(content, dst_node_id=1001, message_type=MessageType.TRAIN), f"r3-{i}")


def _model(run=RUN):
    from ssgd.distributed.flower import FlowerRunConfig
    from ssgd.distributed.flower.task import make_model, param_arrays

    return param_arrays(make_model(FlowerRunConfig.from_mapping(run)))


def _dp_app(**kw):
    from flwr.clientapp import ClientApp

    from ssgd.distributed.flower import FaultMod, LocalNoiseMod, ssgd_mod
    from ssgd.distributed.flower.client_app import train

    app = ClientApp(mods=[FaultMod(), LocalNoiseMod(min_noise_multiplier=1.0, **kw), ssgd_mod])
    app.train()(train)
    return app


def _flat(reply):
    return np.concatenate([np.asarray(a.numpy(), np.float64).ravel() for a in reply.content["arrays"].values()])


def test_seeded_node_noise_does_not_repeat_on_two_nodes_given_the_same_node_id(tmp_path):
    app, w = _dp_app(seed=1234), _model()  # the same app, hence the same seed, on both nodes
    nan = {n: a.copy() for n, a in w.items()}
    nan["net.1.weight"][0, 0] = np.nan  # node A's step fails: its release is noise on a zero vector
    req = {"batch-size": 1, "seed": 7, "server-round": 1, "ssgd-dp-noise-multiplier": 1.0}
    server_id = 4242  # the SuperLink assigns node ids: it gives both nodes this one
    a = _context({"partition-id": 0, "privacy-ledger": str(tmp_path / "a.json")}, node_id=server_id)
    b = _context({"partition-id": 1, "privacy-ledger": str(tmp_path / "b.json")}, node_id=server_id)
    ra, rb = app(_message(nan, req, 0), a), app(_message(w, req, 1), b)
    if ra.has_error() or rb.has_error():
        return  # a node that refuses the collision is fine
    diff = _flat(rb) - _flat(ra)
    # noise of std 2 per entry on ~270k entries: two independent releases differ by ~2*sqrt(2*d), not by ~1
    assert np.linalg.norm(diff) > 10.0, (f"node B's release minus node A's is B's unit vector, noise-free "
                                         f"(norm {np.linalg.norm(diff):.6f}): the noise key is server-assigned")


def test_the_reply_at_a_batch_of_the_whole_share_still_depends_on_the_seed():
    """At batch-size = share size (and multiples) two seeds must not give the same unit vector, else the server
    reads the share size off the batch size where they agree."""
    from ssgd.distributed.flower.client_app import app

    nc = {"num-partitions": 200, "partition-id": 3}  # IID: a small share, whose size the test reads
    from ssgd.distributed.flower import FlowerRunConfig
    from ssgd.distributed.flower.task import node_share

    n = len(node_share(FlowerRunConfig.from_mapping(RUN), 3, 200)[1])
    w, ctx = _model(), _context(nc)

    def dist(b, i):
        r1 = app(_message(w, {"batch-size": b, "seed": 1, "server-round": 1}, i), ctx)
        r2 = app(_message(w, {"batch-size": b, "seed": 2, "server-round": 1}, i + 1), ctx)
        assert not r1.has_error() and not r2.has_error()
        return float(np.linalg.norm(_flat(r1) - _flat(r2)))

    half, whole, double = dist(n // 2, 0), dist(n, 2), dist(2 * n, 4)
    assert whole > 1e-3 * half and double > 1e-3 * half, (
        f"two seeds agree at batch-size = the share size {n} (distance {whole:.1e}) and at twice it ({double:.1e}), "
        f"not at {n // 2} ({half:.1e}): the share size leaks through the replies")


@pytest.mark.parametrize("sigma", [1e155, 1e300])
def test_a_huge_finite_sigma_gets_a_fixed_text_or_a_release(tmp_path, sigma):
    from ssgd.distributed.flower.mod import PUBLIC_REASONS

    app = _dp_app()
    ctx = _context({"privacy-ledger": str(tmp_path / "l.json")})
    try:
        r = app(_message(_model(), {"batch-size": 32, "ssgd-dp-noise-multiplier": sigma}, 10), ctx)
    except Exception as e:  # noqa: BLE001 - Flower's SuperNode would send str(type(e)) + str(e) as the reason
        pytest.fail(f"sigma={sigma:g}: {type(e).__name__} escapes the node's mods ({e}); Flower replies with that text")
    assert not r.has_error() or r.error.reason in PUBLIC_REASONS


def test_a_delta_request_with_an_undecodable_array_gets_a_fixed_text():
    from flwr.app import Array, ConfigRecord, RecordDict

    from ssgd.distributed.flower.client_app import app
    from ssgd.distributed.flower.mod import PUBLIC_REASONS
    from ssgd.distributed.flower.validation import record_from_arrays

    run = {**RUN, "mode": "delta"}
    w = _model(run)
    rec = record_from_arrays(w)
    name = next(iter(w))
    a = rec[name]
    rec[name] = Array(dtype=a.dtype, shape=a.shape, stype=a.stype, data=b"")
    msg = _message(None, None, 20, records=RecordDict({"arrays": rec, "config": ConfigRecord({"batch-size": 32})}))
    try:
        r = app(msg, _context({"ssgd-mode": "delta"}, run))
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"{type(e).__name__} escapes SSGDMod ({e}); Flower replies with that text")
    assert r.has_error() and r.error.reason in PUBLIC_REASONS


def test_a_ledger_reached_through_a_hard_link_is_the_same_ledger(tmp_path):
    """(red team 2 finding 4 covered symlinks with realpath; a hard link has its own real path: two lock files,
    and the atomic rename forks the two names into two ledgers. Low: two names are the node owner's config.)"""
    import os

    from ssgd.privacy import BudgetSpentError
    from ssgd.distributed.flower.privacy import _charge_ledger

    a, b = tmp_path / "ledger.json", tmp_path / "alias.json"
    _charge_ledger(str(a), 1.0, 10.0, 1e-5)
    os.link(a, b)
    made = 1
    for path in [a, b] * 4:
        try:
            _charge_ledger(str(path), 1.0, 10.0, 1e-5)
            made += 1
        except (BudgetSpentError, ValueError, OSError):
            pass
    assert made <= 3, f"{made} releases at sigma 1 where max-epsilon 10 allows 3: the hard link forked the ledger"


def test_the_server_cannot_choose_the_one_example_that_differs_between_two_batches():
    """(finding 5) A node with min-batch-size 8: the server, knowing the share size n (finding 2) and the
    batch-seed formula, asks batch-size n+1 under two seeds whose duplicated example it computed offline, and
    reads both examples' labels off the difference of the two replies."""
    import torch

    from ssgd.distributed.flower import FlowerRunConfig
    from ssgd.distributed.flower.client_app import app
    from ssgd.distributed.flower.task import node_share

    pid, num = 3, 200
    _, y = node_share(FlowerRunConfig.from_mapping(RUN), pid, num)  # ground truth (the server knows only n)
    n = len(y)
    w, ctx = _model(), _context({"num-partitions": num, "partition-id": pid, "min-batch-size": 8})

    def duplicate(seed):  # the server's offline replay of the node's draw
        gen = torch.Generator().manual_seed(seed * 1_000_003 + 1 * 1_009 + pid)
        torch.randperm(n, generator=gen)
        return int(torch.randperm(n, generator=gen)[0])

    def unit(seed, i):
        r = app(_message(w, {"batch-size": n + 1, "seed": seed, "server-round": 1}, 100 + i), ctx)
        assert not r.has_error()
        return {k: np.asarray(a.numpy(), np.float64) for k, a in r.content["arrays"].items()}

    hits = pairs = 0
    for s1 in range(0, 24, 2):
        s2 = s1 + 1
        i, j = duplicate(s1), duplicate(s2)
        if int(y[i]) == int(y[j]):
            continue
        u1, u2 = unit(s1, s1), unit(s2, s2)
        m = np.concatenate([(u1[k] + u2[k]).ravel() for k in u1])
        d = np.concatenate([(u1[k] - u2[k]).ravel() for k in u1])
        coef = float(d @ m / (m @ m))
        dbias = u1["net.5.bias"] - u2["net.5.bias"] - coef * (u1["net.5.bias"] + u2["net.5.bias"])
        pairs += 1
        hits += (int(np.argmin(dbias)), int(np.argmax(dbias))) == (int(y[i]), int(y[j]))
    assert pairs >= 3
    assert hits <= pairs // 2, (f"the labels of two single examples the server chose were read off 2 replies in "
                                f"{hits}/{pairs} pairs at batch-size {n + 1} >= min-batch-size 8")
