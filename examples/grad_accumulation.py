"""Recipe: gradient accumulation with ssgd.SSGD.

What the unit vector means here: ``.grad`` sums the k micro-batches' gradients, and ``opt.step()``
takes ONE unit vector, of that sum -- the direction of the large batch's gradient, exactly as if
the k micro-batches had been one batch. It is not the sum of k unit vectors (that is SSGD(m),
``ssgd.SSGD(..., shards=...)``/``ssgd train --shards m``). Dividing the loss by k does not change
the direction; keep it so the logged loss means the same.

    python examples/grad_accumulation.py
"""

import torch
from torch import nn
from torch.nn import functional as F

import ssgd
from plain_loop import toy_data


def main(epochs=5, micro_batch=8, accumulate=4, lr=0.05, seed=0):
    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(toy_data(seed=seed), batch_size=micro_batch, shuffle=True)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = ssgd.SSGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        opt.zero_grad()
        for i, (x, y) in enumerate(loader, 1):
            loss = F.cross_entropy(model(x), y) / accumulate
            loss.backward()  # .grad accumulates
            if i % accumulate == 0:
                opt.step()  # one unit vector of the summed gradient
                opt.zero_grad()
                losses.append(loss.item() * accumulate)
    return model, losses


if __name__ == "__main__":
    _, losses = main()
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
