"""Recipe: a compiled training step with ssgd.SSGD.

``torch.compile`` the function that runs forward, backward and the optimizer step; SSGD's step
(foreach norms and divisions) traces like torch.optim.SGD's. The first call compiles (seconds to
a minute with inductor); later calls reuse the graph.

    python examples/compiled_step.py
"""

import torch
from torch import nn
from torch.nn import functional as F

import ssgd
from plain_loop import toy_data


def main(epochs=3, batch_size=32, lr=0.05, seed=0, backend="inductor"):
    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(toy_data(seed=seed), batch_size=batch_size, shuffle=True, drop_last=True)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = ssgd.SSGD(model.parameters(), lr=lr, momentum=0.9)

    @torch.compile(backend=backend)
    def train_step(x, y):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.detach()

    losses = []
    for _ in range(epochs):
        for x, y in loader:
            losses.append(float(train_step(x, y)))
    return model, losses


if __name__ == "__main__":
    _, losses = main()
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
