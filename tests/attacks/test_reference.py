"""breaching's Inverting Gradients configuration (the field's reference, 0.1.2), ported: its objective and
schedule against ours on one input. breaching itself runs in benchmarks/breaching_reference.py (its own
virtual environment: its torchvision does not load beside the project's CPU torch)."""

import torch
from torch.nn import functional as F

from ssgd.attacks.engine import DummyGradients, cosine_global, total_variation

# breaching/config/attack/invertinggradients.yaml (+ _default_optimization_attack.yaml), as published
BREACHING_IG = {"objective": "cosine-similarity", "optimizer": "adam", "signed": "hard", "step_size": 0.1,
                "boxed": True, "max_iterations": 24_000, "step_size_decay": "step-lr", "tv": 0.2, "init": "randn",
                "restarts": 1, "label_strategy": "bias-corrected"}


def breaching_cosine(rec, data):
    """breaching.attacks.auxiliaries.objectives.CosineSimilarity._cosine_sim, verbatim but for the jit."""
    scalar_product = rec[0].new_zeros(1)
    rec_norm = rec[0].new_zeros(1)
    data_norm = rec[0].new_zeros(1)
    for r, d in zip(rec, data):
        scalar_product += (r * d).sum()
        rec_norm += r.pow(2).sum()
        data_norm += d.pow(2).sum()
    return 1 - scalar_product / (rec_norm.sqrt() * data_norm.sqrt())


def breaching_tv(x, scale, eps=1e-8):
    """breaching's TotalVariation (inner_exp = outer_exp = 1) for C channels: grouped 3x3 difference filters,
    padding 1, mean of |dx| + |dy| (+eps each) times scale."""
    c = x.shape[1]
    w = torch.tensor([[0, 0, 0], [0, -1, 1], [0, 0, 0]], dtype=x.dtype).unsqueeze(0).unsqueeze(1)
    w = torch.cat([torch.cat((w.transpose(2, 3), w), 0)] * c, 0)
    diffs = F.conv2d(x, w, None, stride=1, padding=1, groups=c)
    sq = diffs.abs() + eps
    return (sq[:, 0::2] + sq[:, 1::2]).mean() * scale


def breaching_milestones(iters):
    return [int(iters // 2.667), int(iters // 1.6), int(iters // 1.142)]


def test_reference_objective_and_schedule_match_ours_on_one_input(lenet8, digits):
    x, y = digits.x_train[:1], digits.y_train[:1]
    params = list(lenet8.parameters())
    target = [g.detach() for g in torch.autograd.grad(F.cross_entropy(lenet8(x), y), params)]
    dummy = torch.rand(1, 1, *x.shape[1:], generator=torch.Generator().manual_seed(0))
    ours_grads = DummyGradients(lenet8).grads(dummy, y.unsqueeze(0))
    theirs_grads = torch.autograd.grad(F.cross_entropy(lenet8(dummy[0]), y), params, create_graph=True)
    # the gradient-matching term: identical
    ours = float(cosine_global(ours_grads, [t.unsqueeze(0) for t in target]))
    theirs = float(breaching_cosine(list(theirs_grads), target))
    assert abs(ours - theirs) < 1e-6 and 0 < ours < 2
    # the TV terms differ in form (breaching pads the border and sums dx and dy per pixel) and weight
    # (0.2 for natural images; ours 1e-4, tuned on MNIST): on the interior both are mean |dx| + |dy|
    interior = breaching_tv(dummy[0], 1.0, eps=0.0)
    assert 0.5 * float(total_variation(dummy)) < float(interior) < 2 * float(total_variation(dummy))
    # the schedule: both divide the step by 10 at 3/8, 5/8 and 7/8 of the iterations
    iters = 2000
    assert all(abs(a - b) <= 2 for a, b in zip(breaching_milestones(iters), [int(iters * f) for f in (3 / 8, 5 / 8, 7 / 8)]))
