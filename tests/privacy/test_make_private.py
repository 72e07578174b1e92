"""make_private: the one-call API gives the CLI's run (same sigma, batches, noise, weights and epsilon)."""

import copy
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ssgd.data import load_dataset, subsample
from ssgd.experiments.train import TrainConfig, prepare_data, train
from ssgd.models import build_model
from ssgd.models.optimizers import build_optimizer
from ssgd.privacy import make_private


@pytest.fixture(scope="module")
def digits():
    return subsample(load_dataset("digits"), 120, 40, seed=0)


def _cfg(**kw):
    base = dict(dataset="digits", model="mlp", optimizer="ssgd", lr=0.05, batch_size=30, epochs=2, seed=7,
                dp="example", target_epsilon=3.0, delta=1e-5)
    base.update(kw)
    return TrainConfig(**base)


def _own_loop(cfg, data, **kw):
    """A user's plain PyTorch loop, made private with one call."""
    model = build_model(cfg.model, data.shape, data.num_classes, seed=cfg.seed)
    opt = build_optimizer(cfg.optimizer, model.parameters(), lr=cfg.lr, scope=cfg.scope)
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=cfg.batch_size, shuffle=True)
    opt, loader, accountant = make_private(model, opt, loader, target_epsilon=cfg.target_epsilon, delta=cfg.delta,
                                           epochs=cfg.epochs, scope=cfg.scope, seed=cfg.seed, **kw)
    for _ in range(cfg.epochs):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            opt.backward(x, y)
            opt.step()
    return model, opt, loader, accountant


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_make_private_reproduces_ssgd_train_dp_example(digits, scope):
    cfg = _cfg(scope=scope)
    cli = train(cfg, None, data=digits, progress=False)
    data, _ = prepare_data(cfg, digits)
    model, opt, loader, accountant = _own_loop(cfg, data)
    assert len(loader) == math.ceil(120 / 30)
    assert accountant.steps == len(loader) * cfg.epochs
    assert opt.noise_multiplier == pytest.approx(cli.privacy["noise_multiplier"], rel=1e-12)
    assert accountant.sample_rate == pytest.approx(cli.privacy["sample_rate"], rel=1e-12)
    assert accountant.get_epsilon(cfg.delta) == pytest.approx(cli.privacy["epsilon"], rel=1e-9)
    assert accountant.get_epsilon(cfg.delta) <= cfg.target_epsilon + 0.05
    assert accountant.get_epsilon(1e-3) < accountant.get_epsilon(1e-6)
    for a, b in zip(model.state_dict().values(), cli.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_noise_multiplier_instead_of_epsilon_and_an_unseen_seed_differs(digits):
    cfg = _cfg(epochs=1)
    data, _ = prepare_data(cfg, digits)
    model, opt, _, acc = _own_loop(cfg, data)
    other, *_ = _own_loop(_cfg(epochs=1, seed=8), data)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    m2 = build_model("mlp", data.shape, data.num_classes, seed=0)
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=30)
    opt2, _, acc2 = make_private(m2, torch.optim.SGD(m2.parameters(), lr=0.1), loader, noise_multiplier=0.0,
                                 delta=1e-5, epochs=1)
    assert opt2.noise_multiplier == 0.0 and acc2.get_epsilon() == 0.0  # no step yet
    with pytest.raises(ValueError, match="exactly one of noise_multiplier"):
        make_private(m2, opt2.optimizer, loader, noise_multiplier=1.0, target_epsilon=2.0, delta=1e-5, epochs=1)


def test_step_without_backward_is_refused_and_generic_datasets_batch(digits):
    data = digits
    m = build_model("mlp", data.shape, data.num_classes, seed=0)
    pairs = [(data.x_train[i], int(data.y_train[i])) for i in range(40)]  # a plain list, not a TensorDataset
    opt, loader, _ = make_private(m, torch.optim.SGD(m.parameters(), lr=0.1), DataLoader(pairs, batch_size=10),
                                  noise_multiplier=1.0, delta=1e-5, epochs=1, seed=1)
    with pytest.raises(RuntimeError, match="backward"):
        opt.step()
    sizes = []
    for x, y in loader:
        assert x.shape[1:] == data.x_train.shape[1:] and x.shape[0] == y.shape[0]
        sizes.append(x.shape[0])
    assert len(sizes) == 4 and 0 < sum(sizes) < 40 * 2  # Poisson: sizes vary around 10
    with pytest.raises(ValueError, match="BatchNorm"):
        bn = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.BatchNorm1d(8))
        make_private(bn, torch.optim.SGD(bn.parameters(), lr=0.1), DataLoader(pairs, batch_size=10),
                     noise_multiplier=1.0, delta=1e-5, epochs=1)


def test_state_dict_resumes_the_same_noise_batches_and_epsilon(digits):
    """Save after one epoch, restore into fresh objects: the second epoch is bit-identical."""
    data = digits

    def fresh():
        m = build_model("mlp", data.shape, data.num_classes, seed=0)
        loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=30)
        return (m, *make_private(m, torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), loader,
                                 noise_multiplier=1.0, delta=1e-5, epochs=2, seed=3))

    def epoch(m, opt, loader):
        for x, y in loader:
            opt.zero_grad()
            opt.backward(x, y)
            opt.step()

    m1, o1, l1, a1 = fresh()
    epoch(m1, o1, l1)
    saved = copy.deepcopy({"model": m1.state_dict(), "opt": o1.state_dict()})  # as torch.save would
    epoch(m1, o1, l1)
    m2, o2, l2, a2 = fresh()
    m2.load_state_dict(saved["model"])
    o2.load_state_dict(saved["opt"])
    epoch(m2, o2, l2)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert a2.steps == a1.steps == 8 and a2.get_epsilon() == a1.get_epsilon()
