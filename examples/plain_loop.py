"""Recipe: ssgd.SSGD in a plain PyTorch loop -- the only change is the optimizer line.

    python examples/plain_loop.py
"""

import torch
from torch import nn
from torch.nn import functional as F

import ssgd


def toy_data(n=256, d=16, classes=4, seed=0):
    """Stand-in for your data: labels from a fixed linear rule."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x @ torch.randn(d, classes, generator=g)).argmax(1)
    return torch.utils.data.TensorDataset(x, y)


def main(epochs=5, batch_size=32, lr=0.05, seed=0):
    torch.manual_seed(seed)
    data = toy_data(seed=seed)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    # was: torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt = ssgd.SSGD(model.parameters(), lr=lr, momentum=0.9)  # steps along the unit vector of the gradient
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))  # schedulers work as usual
    losses = []
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
    return losses


if __name__ == "__main__":
    losses = main()
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
