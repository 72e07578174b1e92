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


def test_validators_and_scale_are_the_cores():
    assert _common.check_nonfinite is ssgd.check_nonfinite
    assert _common.scale_ is ssgd.transform.scale_
    assert _common.NONFINITE == ssgd.NONFINITE_POLICIES
    assert not hasattr(_common, "_SAFE") and not hasattr(_common, "_TINY")
    with pytest.raises(ValueError, match="Invalid nonfinite policy"):
        allreduce_unit_(nn.Linear(2, 2).parameters(), nonfinite="ignore")


def test_local_norms_are_the_core_norms_also_for_large_tensors():
    g = torch.Generator().manual_seed(0)
    big = torch.randn(2**22 + 3, generator=g) + 0.5  # a one-shot float32 CPU reduction is off by ~1e-4 here
    ref = float(big.double().norm())
    assert _common.local_norms([big])[0] == pytest.approx(ref, rel=1e-6)
    huge = [torch.full((8,), 3e38), torch.full((4,), 1e-25)]
    assert _common.local_norms(huge) == pytest.approx([3e38 * math.sqrt(8), 2e-25], rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_scale_rounds_once_and_handles_extreme_scales(dtype):
    t = torch.full((5,), 3.0, dtype=dtype)
    ssgd.transform.scale_([t], [1 / 3])
    assert torch.equal(t, torch.ones(5, dtype=dtype))
    big = torch.full((3,), 1e-30, dtype=torch.float32)
    ssgd.transform.scale_([big], [1e30])  # outside the safe range: through float64
    torch.testing.assert_close(big, torch.ones(3))
    with pytest.raises(ValueError, match="one scale per tensor"):
        ssgd.transform.scale_([t], [1.0, 2.0])
