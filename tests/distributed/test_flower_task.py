"""The Flower node's local update (``task.local_update``, on the one training loop) against a hand-written step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ssgd.distributed.flower.task import local_update, param_arrays
from ssgd.models import build_model


def _data(n=40):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _model():
    return build_model("mlp", (1, 8, 8), 3, seed=0, hidden=8)


def test_fedsgd_sends_the_gradient_of_one_random_batch_and_leaves_the_weights():
    x, y = _data()
    model, ref = _model(), _model()
    before = param_arrays(model)
    grads, loss, used = local_update(model, x, y, mode="fedsgd", batch_size=16, local_steps=5, client_lr=0.1,
                                     generator=torch.Generator().manual_seed(3))
    idx = torch.randint(40, (16,), generator=torch.Generator().manual_seed(3))  # with replacement
    want = F.cross_entropy(ref(x[idx]), y[idx])
    want.backward()
    assert used == 16 and loss == pytest.approx(float(want), rel=1e-6)
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-6, atol=1e-7)
    for name, a in param_arrays(model).items():  # one gradient, no step
        np.testing.assert_array_equal(a, before[name])


@pytest.mark.parametrize("batch_size, used", [(16, 48), (64, 192)])  # drawn with replacement, of any size
def test_delta_takes_local_steps_of_sgd_on_fresh_random_batches(batch_size, used):
    x, y = _data()
    model, ref = _model(), _model()
    w0 = param_arrays(ref)
    gen = torch.Generator().manual_seed(5)
    arrays, loss, n_used = local_update(model, x, y, mode="delta", batch_size=batch_size, local_steps=3,
                                        client_lr=0.2, generator=gen)
    g2 = torch.Generator().manual_seed(5)
    opt = torch.optim.SGD(ref.parameters(), lr=0.2)
    losses = []
    for _ in range(3):
        idx = torch.randint(40, (batch_size,), generator=g2)  # with replacement (red team 3 finding 2)
        opt.zero_grad()
        out = F.cross_entropy(ref(x[idx]), y[idx])
        out.backward()
        opt.step()
        losses.append(float(out))
    assert n_used == used and loss == pytest.approx(sum(losses) / 3, rel=1e-6)
    # the update is the steps' direction, -sum of the gradients = (w_T - w_0) / lr, never w_T itself
    for name, p in ref.named_parameters():
        want = (p.detach().numpy().astype(np.float64) - w0[name]) / 0.2
        np.testing.assert_allclose(arrays[name], want, rtol=1e-4, atol=1e-5)
    assert torch.equal(gen.get_state(), g2.get_state())  # the node's generator moved by exactly its draws
    assert any(np.abs(a).max() > 0 for a in arrays.values())  # the steps moved the weights


def test_the_delta_direction_does_not_round_against_the_server_weights():
    """Red team 2 finding 1: w' = fl32(w - lr g) rounded against a server-chosen w = 1 zeroes a coordinate
    whenever lr |g_i| < ulp(1)/2. The node's update is the sum of its gradients, whatever w and lr."""
    x, y = _data()
    outs = []
    for lr in (1.0, 2.0 ** -30):
        model = _model()
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 1:
                    p.fill_(1.0)  # biases at 1: one ulp of 1 is 2**-23
        arrays, _, _ = local_update(model, x, y, mode="delta", batch_size=8, local_steps=1, client_lr=lr,
                                    generator=torch.Generator().manual_seed(1))
        outs.append(arrays)
    for k in outs[0]:
        np.testing.assert_array_equal(outs[0][k], outs[1][k])  # one step: the direction is -g, lr-free


def test_a_node_without_examples_is_refused():
    with pytest.raises(ValueError, match="holds no training examples"):
        local_update(_model(), torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long), mode="delta",
                     batch_size=4, local_steps=1, client_lr=0.1, generator=torch.Generator())
