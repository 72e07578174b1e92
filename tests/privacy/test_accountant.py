"""epsilon comes from Opacus's accountants, unchanged; invalid settings fail clearly."""

import math

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from ssgd.privacy import (
    DPConfig,
    PrivacyAccountant,
    PrivacyBudgetError,
    compute_epsilon,
    solve_noise_multiplier,
)


def _opacus_eps(cls, sigma, q, steps, delta):
    acc = cls()
    for _ in range(steps):
        acc.step(noise_multiplier=sigma, sample_rate=q)
    return acc.get_epsilon(delta=delta)


@pytest.mark.parametrize("sigma,q,steps,delta", [(1.0, 0.01, 300, 1e-5), (0.7, 0.05, 120, 1e-6), (2.5, 1.0, 10, 1e-5)])
def test_rdp_epsilon_equals_opacus(sigma, q, steps, delta):
    ours = PrivacyAccountant(sigma, q, delta, "rdp")
    for _ in range(steps):
        ours.step()
    ref = _opacus_eps(RDPAccountant, sigma, q, steps, delta)
    assert ours.epsilon() == pytest.approx(ref, rel=1e-12)
    assert compute_epsilon(sigma, q, steps, delta, "rdp") == pytest.approx(ref, rel=1e-12)
    assert ours.steps == steps and ours.history == [(sigma, q, steps)]


def test_prv_epsilon_equals_opacus():
    sigma, q, steps, delta = 1.1, 0.02, 200, 1e-5
    ref = _opacus_eps(PRVAccountant, sigma, q, steps, delta)
    ours = PrivacyAccountant(sigma, q, delta, "prv")
    ours.step(steps)
    assert ours.epsilon() == pytest.approx(ref, rel=1e-9)
    # PRV is tighter than RDP for the same mechanism
    assert ref < compute_epsilon(sigma, q, steps, delta, "rdp")


def test_epsilon_per_epoch_grows_and_summary():
    acc = PrivacyAccountant(1.0, 0.1, 1e-5, level="node")
    rows = []
    for epoch in (1, 2, 3):
        acc.step(10)
        rows.append(acc.end_epoch(epoch))
    eps = [r["epsilon"] for r in rows]
    assert eps[0] < eps[1] < eps[2]
    assert [r["steps"] for r in rows] == [10, 20, 30]
    assert eps[2] == pytest.approx(_opacus_eps(RDPAccountant, 1.0, 0.1, 30, 1e-5))
    s = acc.summary()
    assert s["epsilon"] == eps[2] and s["per_epoch"] == rows and s["level"] == "node"
    assert "per node" in acc.describe()


def test_state_dict_roundtrip():
    a = PrivacyAccountant(1.3, 0.05)
    a.step(7)
    a.end_epoch(1)
    b = PrivacyAccountant(1.3, 0.05)
    b.load_state_dict(a.state_dict())
    assert b.epsilon() == a.epsilon() and b.steps == 7 and b.epochs == a.epochs


def test_zero_noise_is_infinite_epsilon_and_no_steps_is_zero():
    assert PrivacyAccountant(1.0, 0.1).epsilon() == 0.0
    a = PrivacyAccountant(0.0, 0.1)
    a.step()
    assert math.isinf(a.epsilon())
    assert math.isinf(compute_epsilon(0.0, 0.1, 5, 1e-5))


def test_solved_sigma_reaches_target_like_opacus():
    q, steps, delta, target = 1 / 16, 80, 1e-5, 2.0
    sigma = solve_noise_multiplier(target, delta, q, steps)
    eps = compute_epsilon(sigma, q, steps, delta)
    assert target - 0.01 <= eps <= target  # the binary search's tolerance, never above the target
    assert compute_epsilon(sigma * 0.95, q, steps, delta) > target  # and not more noise than needed
    assert solve_noise_multiplier(math.inf, delta, q, steps) == 0.0


@pytest.mark.parametrize("kw,match", [
    (dict(noise_multiplier=-0.1), "noise_multiplier=-0.1"),
    (dict(noise_multiplier=float("nan")), "noise_multiplier"),
    (dict(delta=1.0), "delta=1.0"),
    (dict(delta=1.5), "delta=1.5"),
    (dict(delta=0.0), "delta=0.0"),
    (dict(sample_rate=0.0), "sample_rate=0.0"),
    (dict(sample_rate=1.2), "sample_rate=1.2"),
    (dict(accountant="gdp2"), "accountant='gdp2'"),
])
def test_invalid_accountant_settings(kw, match):
    args = dict(noise_multiplier=1.0, sample_rate=0.1, delta=1e-5, accountant="rdp") | kw
    with pytest.raises(ValueError, match=match):
        PrivacyAccountant(**args)


def test_invalid_solver_settings():
    with pytest.raises(ValueError, match="target_epsilon=-1"):
        solve_noise_multiplier(-1, 1e-5, 0.1, 10)
    with pytest.raises(ValueError, match="delta=1"):
        solve_noise_multiplier(1.0, 1, 0.1, 10)
    with pytest.raises(ValueError, match="steps=-3"):
        compute_epsilon(1.0, 0.1, -3, 1e-5)


def test_unreachable_target_epsilon_says_why():
    with pytest.raises(PrivacyBudgetError, match=r"target_epsilon=1e-07 is unreachable.*Raise the target epsilon"):
        solve_noise_multiplier(1e-7, 1e-5, 1.0, 100_000)


def test_dpconfig_validation():
    DPConfig("example", noise_multiplier=1.0).validate()
    DPConfig("node", target_epsilon=math.inf).validate()
    with pytest.raises(ValueError, match="exactly one of noise_multiplier"):
        DPConfig("example").validate()
    with pytest.raises(ValueError, match="exactly one of noise_multiplier"):
        DPConfig("example", noise_multiplier=1.0, target_epsilon=2.0).validate()
    with pytest.raises(ValueError, match="dp='off'"):
        DPConfig("off", noise_multiplier=1.0).validate()
    with pytest.raises(ValueError, match="Invalid dp='sample'"):
        DPConfig("sample", noise_multiplier=1.0).validate()
    with pytest.raises(ValueError, match="delta=2"):
        DPConfig("example", noise_multiplier=1.0, delta=2).validate()
    with pytest.raises(ValueError, match="noise_multiplier=-1"):
        DPConfig("node", noise_multiplier=-1).validate()
