"""Recipe: (epsilon, delta)-DP in your own loop with one call, ssgd.privacy.make_private.

Opacus users: this is ``PrivacyEngine().make_private_with_epsilon`` (see the README). Each
example's gradient is normalised (no clipping threshold), Gaussian noise calibrated to that
sensitivity is added to the sum, and Opacus's accountant tracks epsilon. Needs ``ssgd[privacy]``.

    python examples/private_loop.py
"""

import torch
from torch import nn

import ssgd
from plain_loop import toy_data
from ssgd.privacy import make_private


def main(epochs=3, batch_size=32, lr=0.05, target_epsilon=3.0, delta=1e-5, seed=0, noise_multiplier=None):
    """``noise_multiplier`` given: that sigma (Opacus's ``make_private``) instead of solving it for ``target_epsilon``."""
    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(toy_data(seed=seed), batch_size=batch_size)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))  # no BatchNorm (per-example grads)
    opt = ssgd.SSGD(model.parameters(), lr=lr, momentum=0.9)
    budget = {"target_epsilon": target_epsilon} if noise_multiplier is None else {"noise_multiplier": noise_multiplier}
    opt, loader, accountant = make_private(model, opt, loader, delta=delta, epochs=epochs, seed=seed, **budget)
    losses = []
    for _ in range(epochs):
        for x, y in loader:  # Poisson-sampled batches
            opt.zero_grad()
            loss = opt.backward(x, y)  # was: F.cross_entropy(model(x), y).backward()
            opt.step()
            losses.append(float(loss))
        print(f"epsilon so far: {accountant.get_epsilon(delta):.2f}")
    return model, opt, accountant, losses


if __name__ == "__main__":
    *_, accountant, losses = main()
    print(accountant.describe())
