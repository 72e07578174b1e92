"""The DDP hook's and allreduce_unit_'s rank-local numerics come from the core (one home, one rule)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import ssgd
from ssgd.distributed import _common
from ssgd.distributed.allreduce import allreduce_unit_
from ssgd.distributed.ddp import register


@pytest.mark.parametrize("eps", [0.0, -1.0, float("inf"), float("nan")])
def test_hook_and_allreduce_share_the_core_eps_rule(eps):
    with pytest.raises(ValueError, match="Invalid eps value"):
        register(nn.Linear(2, 2), eps=eps)  # checked before the DDP type: the same message as ssgd.SSGD's
    with pytest.raises(ValueError, match="Invalid eps value"):
        allreduce_unit_(nn.Linear(2, 2).parameters(), eps=eps)
    with pytest.raises(ValueError, match="Invalid eps value"):
        ssgd.SSGD(nn.Linear(2, 2).parameters(), eps=eps)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_rank_local_numerics_are_the_cores_unit_rule(scope):
    """What a rank sends is exactly ssgd.unit_'s vector (times the reduce factor), and a bad policy is refused
    with the core's message by both DDP entry points."""
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(5, 3, generator=g) * 4, torch.randn(7, generator=g) * 1e-3]
    want = [t.clone() for t in grads]
    ssgd.unit_(want, scope)
    norms, err = _common.normalise_local_(grads, str, scope, ssgd.transform.DEFAULT_EPS, 0.5, "raise", 0)
    assert err is None
    for a, b in zip(grads, want):
        torch.testing.assert_close(a, 0.5 * b, rtol=1e-6, atol=0)
    for fn in (lambda: allreduce_unit_(nn.Linear(2, 2).parameters(), nonfinite="ignore"),
               lambda: register(nn.Linear(2, 2), nonfinite="ignore")):
        with pytest.raises(ValueError, match="Invalid nonfinite policy"):
            fn()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_bucket_is_divided_in_float32(dtype):
    g = [torch.full((1000,), 300.0, dtype=dtype)]  # fp16 sum of squares overflows; the norm does not
    norms, err = _common.normalise_local_(g, str, "global", 1e-12, 0.5, "raise", 0)
    assert err is None and norms[0] == pytest.approx(300.0 * math.sqrt(1000), rel=1e-3)
    torch.testing.assert_close(g[0].float(), torch.full((1000,), 0.5 / math.sqrt(1000)), rtol=1e-2, atol=0)
