"""Recipe: mixed precision with autocast and GradScaler around ssgd.SSGD.

GradScaler needs nothing special: ``scaler.step(opt)`` unscales the gradients, skips the step if
any is inf/NaN (an fp16 overflow), and otherwise calls ``opt.step()``. The unit vector does not
depend on the loss scale anyway (g and s*g have the same direction), so SSGD is insensitive to it.

    python examples/amp_gradscaler.py            # CUDA: float16; CPU: bfloat16
"""

import torch
from torch import nn
from torch.nn import functional as F

import ssgd
from plain_loop import toy_data


def main(epochs=5, batch_size=32, lr=0.05, seed=0, device=None):
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device == "cuda" else torch.bfloat16
    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(toy_data(seed=seed), batch_size=batch_size, shuffle=True)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).to(device)
    opt = ssgd.SSGD(model.parameters(), lr=lr, momentum=0.9)
    scaler = torch.amp.GradScaler(device)
    losses = []
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            with torch.autocast(device_type=device, dtype=dtype):
                loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)  # unscale_, inf check, opt.step()
            scaler.update()
            losses.append(loss.item())
    return losses, scaler


if __name__ == "__main__":
    losses, _ = main()
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
