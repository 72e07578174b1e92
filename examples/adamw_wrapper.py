"""Recipe: share only the unit vector, keep your optimizer: ssgd.SSGDWrapper around AdamW.

The wrapper replaces ``.grad`` by its unit vector (scope="global": of all parameters together;
"layer": per tensor) and then runs AdamW's own step, state and schedule untouched. Note that Adam
normalises per coordinate anyway, so the unit vector mostly changes what a node shares, not how
AdamW moves.

    python examples/adamw_wrapper.py
"""

import torch
from torch import nn
from torch.nn import functional as F

import ssgd
from plain_loop import toy_data


def main(epochs=5, batch_size=32, lr=3e-3, seed=0, scope="global"):
    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(toy_data(seed=seed), batch_size=batch_size, shuffle=True)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = ssgd.SSGDWrapper(torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01), scope=scope)
    losses = []
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return model, opt, losses


if __name__ == "__main__":
    *_, losses = main()
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
