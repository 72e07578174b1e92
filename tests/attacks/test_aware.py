"""Defence-aware attacks (issue 24): every defence of the grid faces an attacker that knows it."""

import pytest
import torch

from ssgd.attacks import AttackMeta, get_attack, shard_assignments
from ssgd.defenses import get_defense
from ssgd.metrics import score_batch


def _meta(data, b=1, **kw):
    return AttackMeta(tuple(data.shape), b, 10, **kw)


def _shards_as_sets(labels, m):
    s = len(labels) // m
    return sorted(tuple(sorted(labels[j * s:(j + 1) * s])) for j in range(m))


def test_shard_deals_are_every_distinct_split_once():
    assert len(shard_assignments(torch.arange(8), 4)) == 105  # 8! / (2!^4 4!)
    deals = shard_assignments(torch.tensor([1, 1, 2, 2, 3, 5, 6, 9]), 4)
    assert len(deals) == 36 and deals[0].tolist() == [1, 1, 2, 2, 3, 5, 6, 9]
    assert len({tuple(_shards_as_sets(d.tolist(), 4)) for d in deals}) == 36
    assert [1, 2, 2, 9, 3, 6, 1, 5] in [d.tolist() for d in deals] or \
        _shards_as_sets([1, 2, 2, 9, 3, 6, 1, 5], 4) in [_shards_as_sets(d.tolist(), 4) for d in deals]
    assert len(shard_assignments(torch.arange(4), 4)) == 1 and len(shard_assignments(torch.arange(4), 2)) == 3
    with pytest.raises(ValueError, match="shards=3 must divide the 4 labels"):
        shard_assignments(torch.arange(4), 3)


def _unsorted_shard_batch(digits):
    """Four digits whose shards (m=2) are {0, 7} and {1, 5}: the sorted labels {0, 1}, {5, 7} are the wrong deal."""
    ys = digits.y_train
    idx = torch.stack([torch.nonzero(ys == c).flatten()[0] for c in (0, 7, 1, 5)])
    return digits.x_train[idx], ys[idx]


@pytest.mark.parametrize("spec", ["dlg-unit:iters=40,restarts=1,screen=15",
                                  "inverting-layer:iters=60,restarts=1,tv=0,screen=15"])
def test_shard_aware_attacks_search_the_label_deal(lenet8, digits, spec):
    """The old dlg-unit cut the sorted labels into contiguous shards ({0,1},{5,7}), a deal no dummy can match;
    the aware attacks search the deals and keep the one their own objective prefers: the true one here."""
    x, y = _unsorted_shard_batch(digits)
    d = get_defense("ssgd-shards:m=2")
    sh = d.shared_update(lenet8, x, y)
    a = get_attack(spec + ",shards=2")
    rec = a.reconstruct(lenet8, sh, _meta(digits, 4))
    assert rec.extra["label_deals"] == 3
    assert _shards_as_sets(rec.labels.tolist(), 2) == _shards_as_sets(y.tolist(), 2)
    if spec.startswith("dlg-unit"):
        fixed = get_attack(spec + ",shards=2,assign=contiguous").reconstruct(lenet8, sh, _meta(digits, 4))
        assert fixed.labels.tolist() == [0, 1, 5, 7]
        assert score_batch(rec.images, x)["psnr"] > score_batch(fixed.images, x)["psnr"] + 5


def test_dlg_unit_under_shards_runs_in_float64(lenet8, digits):
    a = get_attack("dlg-unit:shards=2")
    assert a._dtype(lenet8) == torch.float64 and get_attack("dlg-unit")._dtype(lenet8) == torch.float32
    assert get_attack("dlg-unit:dtype=float32,shards=2")._dtype(lenet8) == torch.float32
    with pytest.raises(ValueError, match="dtype='half'"):
        get_attack("dlg:dtype=half")


def test_inverting_layer_with_shards_is_the_defence_at_the_truth(lenet8, digits):
    """At the true images and deal, the shard-aware objective sees exactly what SSGD(m) shared (cos = 1)."""
    from ssgd.attacks.engine import DummyGradients, cosine_layer

    x, y = _unsorted_shard_batch(digits)
    sh = get_defense("ssgd-shards:m=2").shared_update(lenet8, x, y)
    a = get_attack("inverting-layer:shards=2")
    dummy = a._dummy(DummyGradients(lenet8, 2).grads(x.unsqueeze(0), y.unsqueeze(0)))
    assert float(cosine_layer(dummy, [t.unsqueeze(0) for t in sh])) < 1e-5


def test_mask_aware_objective_ignores_what_pruning_dropped():
    a = get_attack("dlg-aware:mask=true")
    target = [torch.tensor([[0.0, 2.0, 0.0, -1.0]])]
    dummy = [torch.tensor([[5.0, 1.0, -3.0, 4.0]])]
    assert a._dummy(dummy, target)[0].tolist() == [[0.0, 1.0, -0.0, 4.0]]


def test_sign_aware_surrogate_keeps_the_sign_and_saturates():
    a = get_attack("dlg-aware:sign=true")
    g = torch.tensor([[1e-3, -2.0, 50.0, -0.5]], requires_grad=True)
    out = a._dummy([g], None)[0]
    assert torch.equal(torch.sign(out), torch.sign(g.detach())) and out.abs().max() < 1
    assert out[0, 2] > 0.99 and abs(float(out[0, 0])) < 0.01
    out.sum().backward()
    assert torch.isfinite(g.grad).all()
    with pytest.raises(ValueError, match="pick one"):
        get_attack("dlg-aware:mask=true,sign=true")


def test_noise_aware_attacker_averages_its_draws(lenet8, digits):
    """The mean of n releases of the same batch has noise std sigma / sqrt(n)."""
    from ssgd.experiments.leakage import shared_for

    x, y = digits.x_train[:2], digits.y_train[:2]
    d = get_defense("noise:sigma=0.5")
    clean = get_defense("none").shared_update(lenet8, x, y)
    gen = torch.Generator().manual_seed(0)
    one = shared_for(get_attack("dlg-aware"), d, lenet8, x, y, gen)
    many = shared_for(get_attack("dlg-aware:draws=16"), d, lenet8, x, y, gen)
    err = lambda s: torch.cat([(a - c).flatten() for a, c in zip(s, clean)]).std()  # noqa: E731
    assert 0.4 < float(err(one)) < 0.6 and 0.1 < float(err(many)) < 0.15


def test_the_grid_names_an_aware_attacker_for_every_defence():
    from ssgd.defenses import list_defenses
    from ssgd.experiments.leakage import AWARE, AWARE_ELSEWHERE, adapt_attack, not_applicable

    assert set(AWARE) | set(AWARE_ELSEWHERE) == set(list_defenses())
    assert adapt_attack("dlg-aware", get_defense("prune:p=90"), 4).mask is True
    assert adapt_attack("dlg-aware", get_defense("sign"), 4).sign is True
    assert adapt_attack("dlg-aware", get_defense("noise:sigma=0.01"), 4).draws > 1
    assert adapt_attack("dlg-aware", get_defense("ssgd-noise:sigma=0.01"), 4).scope == "global"
    a = adapt_attack("inverting-layer", get_defense("ssgd-shards:m=4"), 8)
    assert (a.shards, a.scope) == (4, "global")
    assert not_applicable("dlg-aware", get_defense("ssgd-layer"), 1).endswith("dlg-unit and inverting-layer "
                                                                              "(told scope and shards)")
    assert not_applicable("dlg-aware", get_defense("sign"), 1) is None
