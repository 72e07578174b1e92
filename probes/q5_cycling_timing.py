"""Probe q5: the cost of drawing a batch larger than the share. ``draw()`` concatenates ceil(B/n) permutations,
re-copying the growing index tensor each time (O(B^2/n)); the time of a reply then depends on the share size n.
Measured on the node's own function (the batch draw only), B = 8192 (the default max-batch-size)."""
import time

import torch

B = 8192
for n in (1, 2, 8, 64, 1024, 8192):
    gen = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for _ in range(5):  # the body of task.local_update's draw()
        idx = torch.randperm(n, generator=gen)[:B]
        while idx.numel() < B:
            idx = torch.cat([idx, torch.randperm(n, generator=gen)[:B - idx.numel()]])
    print(f"share {n:5d}: draw of batch {B} takes {(time.perf_counter() - t) / 5 * 1e3:.2f} ms")
