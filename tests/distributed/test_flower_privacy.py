"""Node-level DP on Flower: the server adds N(0, (sigma*Delta)^2) to the sum of unit updates and reports epsilon."""

import numpy as np
import pytest

pytest.importorskip("flwr")

pytestmark = pytest.mark.slow

CFG = {"num-rounds": 1, "test-size": 100, "batch-size": 32, "mode": "delta", "server-lr": 0.5, "local-steps": 1,
       "client-lr": 0.1, "out-dir": "", "resume": False}


def _run(strategy, nodes=3, rounds=1):
    from ssgd.distributed.flower import FlowerRunConfig, InProcessGrid
    from ssgd.distributed.flower.client_app import app
    from ssgd.distributed.flower.task import make_model, param_arrays
    from ssgd.distributed.flower.validation import arrays_from_record, record_from_arrays

    cfg = FlowerRunConfig.from_mapping(CFG)
    w0 = param_arrays(make_model(cfg))
    grid = InProcessGrid(app, nodes, CFG, node_configs=[{"ssgd-mode": "delta"}] * nodes)
    res = strategy(cfg, w0).start(grid, record_from_arrays(w0), num_rounds=rounds)
    return w0, arrays_from_record(res.arrays), res


def _kw(cfg, w0):
    return dict(mode=cfg.mode, server_lr=cfg.server_lr, update_keys=list(w0),
                client_config={"local-steps": cfg.local_steps, "client-lr": cfg.client_lr, "batch-size": cfg.batch_size})


def test_private_strategy_noise_and_epsilon():
    from ssgd.distributed.flower import SSGDStrategy
    from ssgd.privacy import NodePrivacy, compute_epsilon
    from ssgd.distributed.flower import PrivateSSGDStrategy

    sigma, n = 2.0, 2
    made = {}

    def private(cfg, w0):
        made["s"] = PrivateSSGDStrategy(privacy=NodePrivacy(sigma, split="central", seed=0), **_kw(cfg, w0))
        return made["s"]

    w0, plain, _ = _run(lambda cfg, w0: SSGDStrategy(**_kw(cfg, w0)), nodes=n)
    _, noisy, _ = _run(private, nodes=n)
    diff = np.concatenate([(noisy[k] - plain[k]).ravel() for k in w0]).astype(np.float64)
    strategy = made["s"]
    # delta mode: w += lr/n * (sum of unit updates + N(0, (sigma * (1 + tol))^2))
    assert diff.std() == pytest.approx(sigma * strategy.sensitivity * CFG["server-lr"] / n, rel=0.05)
    assert abs(diff.mean()) < 5 * diff.std() / np.sqrt(diff.size)
    assert strategy.privacy.accountant.steps == 1
    assert strategy.privacy.epsilon() == pytest.approx(compute_epsilon(sigma, 1.0, 1, 1e-5))


class _Grid:
    def __init__(self, n):
        self.n = n

    def get_node_ids(self):
        return list(range(1, self.n + 1))


def test_layer_scope_noise_is_calibrated_to_sqrt_l():
    """Finding 6: scope='layer' added noise for sensitivity 1, but L unit tensors have sensitivity sqrt(L)."""
    from flwr.app import ConfigRecord, Message, RecordDict

    from ssgd.distributed.flower import PrivateSSGDStrategy, SSGDStrategy
    from ssgd.distributed.flower.validation import arrays_from_record, record_from_arrays
    from ssgd.privacy import NodePrivacy

    from flower_helpers import identity

    identity()
    sigma, n, lr = 1.5, 2, 1.0
    rng = np.random.default_rng(0)
    w = {f"t{i}": rng.standard_normal(size).astype(np.float32)
         for i, size in enumerate((4000, 3000, 2000, 1000, 500, 250, 100, 50))}
    L = len(w)
    units = []
    for _ in range(n):  # layer-wise unit vectors
        units.append({k: (g / np.linalg.norm(g)).astype(np.float32)
                      for k, g in ((k, rng.standard_normal(v.shape)) for k, v in w.items())})

    def step(strategy):
        msgs = strategy.configure_train(1, record_from_arrays(w), ConfigRecord(), _Grid(n))
        from flower_helpers import pushed

        replies = [Message(RecordDict({"arrays": record_from_arrays(u)}), reply_to=pushed(m, f"m{j}"))
                   for j, (m, u) in enumerate(zip(msgs, units))]
        return arrays_from_record(strategy.aggregate_train(1, replies)[0])

    base = step(SSGDStrategy(scope="layer", server_lr=lr, mode="delta"))
    private = PrivateSSGDStrategy(privacy=NodePrivacy(sigma, split="central", seed=1), scope="layer",
                                  server_lr=lr, mode="delta")
    noisy = step(private)
    diff = np.concatenate([(noisy[k].astype(np.float64) - base[k]).ravel() for k in w])
    true_sensitivity = np.sqrt(L) * (1 + private.norm_tol)
    assert private.sensitivity == pytest.approx(true_sensitivity)
    # the noise on the sum has std sigma * sqrt(L) (2.83 sigma for L = 8), not sigma * 1
    assert diff.std() == pytest.approx(sigma * true_sensitivity * lr / n, rel=0.03)


def test_private_strategy_refuses_local_noise_objects():
    from ssgd.privacy import NodePrivacy
    from ssgd.distributed.flower import PrivateSSGDStrategy

    with pytest.raises(ValueError, match="split='central'"):
        PrivateSSGDStrategy(privacy=NodePrivacy(1.0, split="distributed", num_nodes=3))
    with pytest.raises(TypeError, match="NodePrivacy"):
        PrivateSSGDStrategy(privacy=1.0)


# ---------------------------------------------------------------- node-local noise (LocalNoiseMod)
def _fixed_unit_app(mods, g):
    """A ClientApp whose train reply is the fixed gradient ``g`` (a dict of arrays), behind ``mods``."""
    from flwr.app import Message, RecordDict
    from flwr.clientapp import ClientApp

    from ssgd.distributed.flower.validation import record_from_arrays

    app = ClientApp(mods=mods)

    @app.train()
    def train(msg, context):
        return Message(content=RecordDict({"arrays": record_from_arrays(g)}), reply_to=msg)

    return app


def _train_once(app, arrays, config, nodes=1, rnd=1, node_configs=None):
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    from ssgd.distributed.flower import InProcessGrid
    from ssgd.distributed.flower.validation import arrays_from_record, record_from_arrays

    grid = InProcessGrid(app, nodes, {}, node_configs=node_configs)
    msgs = [Message(RecordDict({"arrays": record_from_arrays(arrays),
                                "config": ConfigRecord({"server-round": rnd, **config})}),
                    dst_node_id=n, message_type=MessageType.TRAIN) for n in sorted(grid.get_node_ids())]
    out = list(grid.send_and_receive(msgs))
    return [(r.error if r.has_error() else arrays_from_record(r.content.array_records["arrays"])) for r in out]


G = {"a": np.linspace(-1, 2, 30_000, dtype=np.float32).reshape(300, 100), "b": np.ones(10_000, np.float32)}


def _unit(g):
    n = np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in g.values()))
    return {k: v.astype(np.float64) / n for k, v in g.items()}


def test_local_noise_mod_adds_the_claimed_noise_fresh_and_seeded(tmp_path):
    from ssgd.distributed.flower import SSGDMod
    from ssgd.distributed.flower import DP_NOISE_MULTIPLIER, LocalNoiseMod

    sigma = 0.7
    u = _unit(G)

    def seeded(ledger, **kw):  # a seeded node needs a ledger: its noise is keyed by the ledger's release number
        app = _fixed_unit_app([LocalNoiseMod(min_noise_multiplier=0.5, seed=3, max_epsilon=50.0), SSGDMod()], G)
        nodes = kw.pop("nodes", 1)
        return _train_once(app, G, {DP_NOISE_MULTIPLIER: sigma}, nodes=nodes, **kw,
                           node_configs=[{"privacy-ledger": str(tmp_path / f"{ledger}-{i}.json")} for i in range(nodes)])

    [out] = seeded("a")
    noise = np.concatenate([(out[k].astype(np.float64) - u[k]).ravel() for k in G])
    # node-local sensitivity 2: std = 2 sigma; 40k draws: the std is within ~1% (5 standard errors: 1.8%)
    assert noise.std() == pytest.approx(2 * sigma, rel=0.02)
    assert abs(noise.mean()) < 5 * 2 * sigma / np.sqrt(noise.size)
    # seeded: keyed by the random salt in the ledger, so a copied ledger reproduces (the documented weakness:
    # never copy a ledger); a fresh ledger at the same place (another machine), the next release of the same
    # ledger (any round), another ledger or another node is fresh
    import shutil

    shutil.copy(tmp_path / "a-0.json", tmp_path / "copy-0.json")
    [same_round] = seeded("a")  # ledger "a" continues: release 2
    assert not np.array_equal(out["a"], same_round["a"])
    [copied] = seeded("copy")  # release 2 of the copy: the same salt and number, the same noise
    assert all(np.array_equal(same_round[k], copied[k]) for k in G)
    (tmp_path / "a-0.json").unlink()
    [fresh] = seeded("a")  # release 1 of a new ledger at the same path: a new salt
    assert not np.array_equal(out["a"], fresh["a"])
    [other_ledger] = seeded("b")  # release 1 of another ledger
    assert not np.array_equal(out["a"], other_ledger["a"])
    n1, n2 = seeded("c", nodes=2)
    assert not np.array_equal(n1["a"], n2["a"])
    # under the opt-out privacy-ledger=memory a seeded node refuses (its count would restart in a new run: the noise
    # would repeat); by default it counts in its own ledger file under its Flower home and answers
    seeded_app = _fixed_unit_app([LocalNoiseMod(min_noise_multiplier=0.5, seed=3), SSGDMod()], G)
    [refused] = _train_once(seeded_app, G, {DP_NOISE_MULTIPLIER: sigma}, node_configs=[{"privacy-ledger": "memory"}])
    assert not isinstance(refused, dict)
    # two nodes of one seed (default ledgers: their partition-ids) to which the server gives the same node id
    # (each grid's only node is 1001): their noise is keyed by their own ledgers, not by the server's id
    [p0] = _train_once(seeded_app, G, {DP_NOISE_MULTIPLIER: sigma}, node_configs=[{"partition-id": 0}])
    [p1] = _train_once(seeded_app, G, {DP_NOISE_MULTIPLIER: sigma}, node_configs=[{"partition-id": 1}])
    assert isinstance(p0, dict) and isinstance(p1, dict) and not np.array_equal(p0["a"], p1["a"])
    # unseeded: OS entropy, fresh on every call
    mod = LocalNoiseMod(min_noise_multiplier=0.5, max_epsilon=50.0)  # the default ledger's releases 2 and 3
    [e1] = _train_once(_fixed_unit_app([mod, SSGDMod()], G), G, {DP_NOISE_MULTIPLIER: sigma})
    [e2] = _train_once(_fixed_unit_app([mod, SSGDMod()], G), G, {DP_NOISE_MULTIPLIER: sigma})
    assert not np.array_equal(e1["a"], e2["a"])


@pytest.mark.parametrize("sigma,match", [(-1.0, "Invalid ssgd-dp-noise-multiplier"),
                                         (float("nan"), "'ssgd-dp-noise-multiplier'=nan"),
                                         ("lots", "'ssgd-dp-noise-multiplier'='lots'"),
                                         (None, "no noise multiplier"),
                                         (0.1, "below this node's minimum")])
def test_local_noise_mod_bad_sigma_is_an_error_reply(sigma, match, caplog):
    from flwr.common.constant import ErrorCode

    from ssgd.distributed.flower.mod import REFUSED

    from ssgd.distributed.flower import SSGDMod
    from ssgd.distributed.flower import DP_NOISE_MULTIPLIER, LocalNoiseMod

    cfg = {} if sigma is None else {DP_NOISE_MULTIPLIER: sigma}
    [err] = _train_once(_fixed_unit_app([LocalNoiseMod(min_noise_multiplier=0.5), SSGDMod()], G), G, cfg)
    assert not isinstance(err, dict)
    assert err.code == ErrorCode.MOD_FAILED_PRECONDITION and err.reason == REFUSED  # the fixed text only
    assert match.split("Invalid ")[-1] in caplog.text  # the detail stays in the node's log


def test_local_noise_mod_inside_ssgd_mod_releases_noise_on_a_zero_vector(caplog):
    """Misplaced inside SSGDMod, the mod sees a raw gradient. It used to answer with an error naming
    the raw norm; an error that depends on the data must not leave the node under DP, so it releases
    the mechanism on a zero vector (pure noise, independent of the gradient) and logs why."""
    from ssgd.distributed.flower import SSGDMod
    from ssgd.distributed.flower import DP_NOISE_MULTIPLIER, LocalNoiseMod

    [out] = _train_once(_fixed_unit_app([SSGDMod(), LocalNoiseMod(min_noise_multiplier=1.0)], G), G,
                        {DP_NOISE_MULTIPLIER: 1.0})
    assert isinstance(out, dict) and "list LocalNoiseMod before SSGDMod" in caplog.text
    # SSGDMod then normalises the noise: a unit vector uncorrelated with G (|cos| ~ 1/sqrt(d))
    flat = np.concatenate([out[k].astype(np.float64).ravel() for k in G])
    g = np.concatenate([G[k].astype(np.float64).ravel() for k in G])
    assert abs(flat @ g) / (np.linalg.norm(flat) * np.linalg.norm(g)) < 5 / np.sqrt(g.size)


def test_noisy_norm_bound():
    from ssgd.distributed.flower import noisy_norm_bound

    rng = np.random.default_rng(0)
    d, s = 5000, 0.3
    u = np.zeros(d); u[0] = 1.0
    norms = np.linalg.norm(u + s * rng.standard_normal((200, d)), axis=1)
    b = noisy_norm_bound(s, d)
    assert norms.max() < b < 1.15 * np.sqrt(1 + s * s * d)  # holds for honest vectors, yet within 15% (d=5000)
    assert noisy_norm_bound(0.0, d) == 1.0
    with pytest.raises(ValueError, match="false_reject"):
        noisy_norm_bound(s, d, false_reject=0.0)


def test_local_private_strategy_accepts_noisy_rejects_boosted_and_reports_epsilon():
    from flwr.clientapp import ClientApp

    from ssgd.distributed.flower import FaultMod, FlowerRunConfig, InProcessGrid, ssgd_mod
    from ssgd.distributed.flower.client_app import train
    from ssgd.distributed.flower.task import make_model, param_arrays
    from ssgd.distributed.flower.validation import arrays_from_record, record_from_arrays
    from ssgd.privacy import NodePrivacy, compute_epsilon
    from ssgd.distributed.flower import LocalNoiseMod, PrivateSSGDStrategy, noisy_norm_bound

    sigma, delta, rounds = 0.5, 1e-5, 2
    # sigma=0.5 spends epsilon 10.7 per release: above the default node budget (10), so this node sets a larger one
    app = ClientApp(mods=[FaultMod(), LocalNoiseMod(min_noise_multiplier=0.5, max_epsilon=50.0), ssgd_mod])
    app.train()(train)
    cfg = FlowerRunConfig.from_mapping(CFG)
    w0 = param_arrays(make_model(cfg))
    d = sum(a.size for a in w0.values())
    strategy = PrivateSSGDStrategy(privacy=NodePrivacy(sigma, mode="local", delta=delta), **_kw(cfg, w0))
    grid = InProcessGrid(app, 3, CFG, node_configs=[{"ssgd-mode": "delta"}, {"ssgd-mode": "delta"},
                                                    {"ssgd-mode": "delta", "fault": "norm1000"}])
    res = strategy.start(grid, record_from_arrays(w0), num_rounds=rounds)

    s = 2 * sigma  # node-local sensitivity 2
    assert strategy.node_noise_std == s
    bound = noisy_norm_bound(s, d)
    for r in range(1, rounds + 1):
        book = strategy.rounds[r]
        assert sorted(n for n, _ in book["accepted"]) == [1001, 1002]
        for _, norm in book["accepted"]:  # u + noise: norm ~ sqrt(1 + s^2 d), under the bound
            assert norm == pytest.approx(np.sqrt(1 + s * s * d), rel=0.01) and norm < bound
        [(node, reason)] = book["rejected"]
        assert node == 1003 and "exceeds the bound" in reason
        m = res.train_metrics_clientapp[r]
        assert m["epsilon"] == pytest.approx(compute_epsilon(sigma, 1.0, r, delta))
        assert m["delta"] == delta
    assert strategy.releases == {1001: rounds, 1002: rounds, 1003: rounds}
    # no server noise: the model moved by lr/2 * (u1 + n1 + u2 + n2) per round, noise std lr/2*sqrt(2 rounds)*s
    w = arrays_from_record(res.arrays)
    diff = np.concatenate([(w[k] - w0[k]).ravel() for k in w0]).astype(np.float64)
    assert diff.std() == pytest.approx(CFG["server-lr"] / 2 * np.sqrt(2 * rounds) * s, rel=0.02)


def test_local_mode_checks_its_settings():
    from ssgd.privacy import NodePrivacy
    from ssgd.distributed.flower import PrivateSSGDStrategy

    with pytest.raises(ValueError, match="scope='global'"):
        PrivateSSGDStrategy(privacy=NodePrivacy(1.0, mode="local"), scope="layer")
    with pytest.raises(ValueError, match="false_reject"):
        PrivateSSGDStrategy(privacy=NodePrivacy(1.0, mode="local"), false_reject=2.0)


def test_local_noise_mod_requires_the_nodes_own_minimum_sigma(caplog):
    """Finding 4: the default min_noise_multiplier=0 accepted sigma=0 from the server (a bare unit vector left)."""
    from ssgd.distributed.flower import DP_NOISE_MULTIPLIER, LocalNoiseMod, SSGDMod

    from ssgd.distributed.flower.mod import REFUSED

    [err] = _train_once(_fixed_unit_app([LocalNoiseMod(), SSGDMod()], G), G, {DP_NOISE_MULTIPLIER: 0.0})
    assert not isinstance(err, dict) and err.reason == REFUSED and "min-noise-multiplier" in caplog.text
    caplog.clear()
    [err] = _train_once(_fixed_unit_app([LocalNoiseMod(noise_multiplier=1.0), SSGDMod()], G), G, {})
    assert not isinstance(err, dict) and err.reason == REFUSED and "min-noise-multiplier" in caplog.text
    with pytest.raises(ValueError, match="min-noise-multiplier"):
        LocalNoiseMod(min_noise_multiplier=0.0)


def test_local_noise_mod_minimum_from_the_node_config_and_only_the_noisy_vector_leaves(caplog):
    """Finding 4: under node-local DP the reply carried the exact loss and count, outside the accountant."""
    from flwr.app import Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from ssgd.distributed.flower import DP_NOISE_MULTIPLIER, InProcessGrid, LocalNoiseMod, SSGDMod
    from ssgd.distributed.flower.validation import record_from_arrays

    app = ClientApp(mods=[LocalNoiseMod(), SSGDMod(allowed_metrics=("train-loss", "num-examples"))])

    @app.train()
    def train(msg, context):
        return Message(content=RecordDict({"arrays": record_from_arrays(G),
                                           "metrics": MetricRecord({"train-loss": 0.3, "num-examples": 1})}),
                       reply_to=msg)

    from flwr.app import ConfigRecord, MessageType

    grid = InProcessGrid(app, 1, {}, node_configs=[{"min-noise-multiplier": 0.8}])
    [node] = grid.get_node_ids()

    def ask(sigma):
        m = Message(RecordDict({"arrays": record_from_arrays(G), "config": ConfigRecord({DP_NOISE_MULTIPLIER: sigma})}),
                    dst_node_id=node, message_type=MessageType.TRAIN)
        return list(grid.send_and_receive([m]))[0]

    low = ask(0.5)
    from ssgd.distributed.flower.mod import REFUSED

    assert low.has_error() and low.error.reason == REFUSED and "below this node's minimum 0.8" in caplog.text
    ok = ask(0.8)
    assert not ok.has_error()
    assert list(ok.content.keys()) == ["arrays"]  # the metrics the node allowed without DP do not leave under DP
