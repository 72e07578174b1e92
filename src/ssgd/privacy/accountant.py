r"""Privacy accounting for SSGD + Gaussian noise, delegated to Opacus's accountants.

ssgd never computes :math:`\varepsilon` itself: :class:`PrivacyAccountant` records
the (noise multiplier :math:`\sigma`, sampling rate :math:`q`) of every noisy step in
an ``opacus.accountants`` accountant (RDP or PRV) and asks it for
:math:`\varepsilon(\delta)`; :func:`solve_noise_multiplier` calls
``opacus.accountants.utils.get_noise_multiplier``.

The mechanism being accounted is the (Poisson-)subsampled Gaussian mechanism with
noise standard deviation :math:`\sigma\Delta` on a sum whose :math:`L_2`
sensitivity is :math:`\Delta` -- exactly Opacus's DP-SGD with
``max_grad_norm = Δ``. For SSGD, :math:`\Delta` follows from the unit vectors
(see :func:`ssgd.privacy.sensitivity`), so ``noise_multiplier`` means the same
here as in Opacus: the noise's standard deviation in units of the sensitivity.

:math:`\sigma = 0` means no noise and :math:`\varepsilon = \infty`.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from ..transform import check_nonnegative

__all__ = [
    "ACCOUNTANTS",
    "PrivacyBudgetError",
    "PrivacyAccountant",
    "check_accountant",
    "check_delta",
    "check_noise_multiplier",
    "check_sample_rate",
    "check_target_epsilon",
    "compute_epsilon",
    "solve_noise_multiplier",
]

ACCOUNTANTS = ("rdp", "prv")


class PrivacyBudgetError(ValueError):
    """The requested (ε, δ) cannot be reached with the given sampling rate and steps."""


def check_noise_multiplier(noise_multiplier: float) -> float:
    return check_nonnegative("noise_multiplier", noise_multiplier,
                             "the noise standard deviation in units of the sensitivity; 0 = no noise, no privacy")


def check_delta(delta: float) -> float:
    if delta is None or not isinstance(delta, (int, float)) or not (0.0 < delta < 1.0):
        raise ValueError(f"Invalid delta={delta!r}; must satisfy 0 < delta < 1 "
                         "(and should be well below 1/number-of-records, e.g. 1e-5)")
    return float(delta)


def check_target_epsilon(target_epsilon: float) -> float:
    if target_epsilon is None or not isinstance(target_epsilon, (int, float)) or math.isnan(target_epsilon) \
            or target_epsilon <= 0:
        raise ValueError(f"Invalid target_epsilon={target_epsilon!r}; must be > 0 (use inf for no privacy)")
    return float(target_epsilon)


def check_sample_rate(sample_rate: float) -> float:
    if sample_rate is None or not isinstance(sample_rate, (int, float)) or not (0.0 < sample_rate <= 1.0):
        raise ValueError(f"Invalid sample_rate={sample_rate!r}; must satisfy 0 < q <= 1 "
                         "(batch size / dataset size for Poisson sampling, 1 when every record is used every step)")
    return float(sample_rate)


def check_accountant(accountant: str) -> str:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"Invalid accountant={accountant!r}; expected one of {ACCOUNTANTS} "
                         "(Opacus's RDP or PRV accountant)")
    return accountant


def _check_steps(steps: int) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"Invalid steps={steps!r}; must be an integer >= 0")
    return steps


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _opacus_accountant(name: str):
    try:
        from opacus.accountants import create_accountant
    except ImportError as e:  # pragma: no cover - declared extra
        raise ImportError("privacy accounting needs Opacus: pip install 'ssgd[privacy]' (opacus>=1.5)") from e
    return create_accountant(mechanism=check_accountant(name))


def _epsilon(acc, delta: float) -> float:
    with warnings.catch_warnings():
        # RDP: "Optimal order is the largest alpha" -- the bound is still valid, just loose
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return float(acc.get_epsilon(delta=delta))


def compute_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                    accountant: str = "rdp") -> float:
    """ε after ``steps`` steps of the subsampled Gaussian mechanism (Opacus's accountant)."""
    sigma = check_noise_multiplier(noise_multiplier)
    q = check_sample_rate(sample_rate)
    steps = _check_steps(steps)
    delta = check_delta(delta)
    if steps == 0:
        return 0.0
    if sigma == 0.0:
        return math.inf
    acc = _opacus_accountant(accountant)
    acc.history = [(sigma, q, steps)]
    return _epsilon(acc, delta)


def solve_noise_multiplier(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                           accountant: str = "rdp", epsilon_tolerance: float = 0.01) -> float:
    """The noise multiplier σ that reaches ``(target_epsilon, delta)`` after ``steps`` steps.

    Calls ``opacus.accountants.utils.get_noise_multiplier`` (binary search on the
    accountant). ``target_epsilon=inf`` returns 0 (no noise). Raises
    :class:`PrivacyBudgetError` when the target is out of reach (σ would exceed 10^6).
    """
    eps = check_target_epsilon(target_epsilon)
    delta = check_delta(delta)
    q = check_sample_rate(sample_rate)
    steps = _check_steps(steps)
    check_accountant(accountant)
    if math.isinf(eps) or steps == 0:
        return 0.0
    return _solve_cached(eps, delta, q, steps, accountant, float(epsilon_tolerance))


@functools.lru_cache(maxsize=256)
def _solve_cached(eps: float, delta: float, q: float, steps: int, accountant: str, epsilon_tolerance: float) -> float:
    # a pure function of its arguments (Opacus's binary search, ~20 accountant calls): cached
    from opacus.accountants.utils import MAX_SIGMA, get_noise_multiplier

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            return float(get_noise_multiplier(target_epsilon=eps, target_delta=delta, sample_rate=q, steps=steps,
                                              accountant=accountant, epsilon_tolerance=epsilon_tolerance))
    except ValueError as e:
        if "too low" not in str(e):
            raise
        raise PrivacyBudgetError(
            f"target_epsilon={eps:g} is unreachable with delta={delta:g}, sample_rate={q:g} and {steps} steps: "
            f"the noise multiplier would exceed {MAX_SIGMA:g}. Raise the target epsilon or delta, or train for "
            "fewer steps / with a smaller sampling rate (smaller batches)."
        ) from e


@dataclass
class PrivacyAccountant:
    """Tracks ε over training with Opacus's accountant and reports it per epoch and at the end.

    Call :meth:`step` once per noisy release (one optimizer step, or one federated
    round), :meth:`end_epoch` at the end of each epoch (it returns and stores a row
    ``{"epoch", "steps", "epsilon", "delta"}``) and :meth:`summary` at the end.

    ``level`` names what one unit of privacy is (``"example"`` or ``"node"``), so the
    report says "(ε, δ)-DP per example" or "per node".
    """

    noise_multiplier: float
    sample_rate: float
    delta: float = 1e-5
    accountant: str = "rdp"
    level: str = "example"
    epochs: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self):
        self.noise_multiplier = check_noise_multiplier(self.noise_multiplier)
        self.sample_rate = check_sample_rate(self.sample_rate)
        self.delta = check_delta(self.delta)
        check_accountant(self.accountant)
        self._acc = _opacus_accountant(self.accountant)
        self._steps = 0

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """Opacus's history: ``[(noise_multiplier, sample_rate, steps), ...]``."""
        return list(self._acc.history)

    def step(self, n: int = 1, *, noise_multiplier: float | None = None, sample_rate: float | None = None) -> None:
        """Record ``n`` releases (defaults: the accountant's σ and q)."""
        sigma = self.noise_multiplier if noise_multiplier is None else check_noise_multiplier(noise_multiplier)
        q = self.sample_rate if sample_rate is None else check_sample_rate(sample_rate)
        if _check_steps(n):  # one Opacus step, then its (sigma, q, steps) entry grows by the rest: O(1) in n
            self._acc.step(noise_multiplier=sigma, sample_rate=q)
            s, r, k = self._acc.history[-1]
            self._acc.history[-1] = (s, r, k + n - 1)
        self._steps += n

    def epsilon(self, delta: float | None = None) -> float:
        """ε spent so far at ``delta`` (default: the accountant's δ)."""
        delta = self.delta if delta is None else check_delta(delta)
        if self._steps == 0:
            return 0.0
        if any(s == 0.0 for s, _, _ in self._acc.history):
            return math.inf
        return _epsilon(self._acc, delta)

    def end_epoch(self, epoch: int) -> dict[str, float]:
        row = {"epoch": epoch, "steps": self._steps, "epsilon": self.epsilon(), "delta": self.delta}
        self.epochs.append(row)
        return row

    def summary(self) -> dict[str, Any]:
        return {"level": self.level, "accountant": self.accountant, "noise_multiplier": self.noise_multiplier,
                "sample_rate": self.sample_rate, "delta": self.delta, "steps": self._steps,
                "epsilon": self.epsilon(), "per_epoch": list(self.epochs)}

    def describe(self) -> str:
        eps = self.epsilon()
        return (f"(epsilon={eps:.3g}, delta={self.delta:g})-DP per {self.level} after {self._steps} steps "
                f"[sigma={self.noise_multiplier:.4g}, q={self.sample_rate:.4g}, {self.accountant.upper()} accountant]")

    def replay(self, releases_per_epoch: int, epochs: int) -> list[dict[str, float]]:
        """Forget everything recorded and account ``epochs`` epochs of ``releases_per_epoch`` releases each at
        this accountant's σ and q (per-epoch rows included); returns the rows.

        How a resumed run restores its accountant: from its own settings and the number of epochs it completed,
        never from a file (a rewound or edited accountant in a checkpoint would publish a smaller ε)."""
        self._acc = _opacus_accountant(self.accountant)
        self._steps = 0
        self.epochs = []
        k = _check_steps(releases_per_epoch)
        for epoch in range(1, _check_steps(epochs) + 1):
            self.step(k)
            self.end_epoch(epoch)
        return list(self.epochs)

    def state_dict(self) -> dict[str, Any]:
        return {"accountant": self._acc.state_dict(), "steps": self._steps, "epochs": list(self.epochs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A saved state, checked as hostile input (ValueError, one line): every recorded release at this
        accountant's own σ and q (a file never changes what a release costs), the step count their sum, the
        per-epoch rows in order with this δ. How *many* releases there were, only the caller can know: a resumed
        run re-derives it from its settings and completed epochs (:meth:`replay`) rather than trusting it.
        (So the state of an accountant that recorded releases at another σ through ``step(noise_multiplier=...)``
        does not load: such a history is accounted afresh from its own record, as :class:`ReleaseBudget` does.)"""
        def bad(what: str) -> ValueError:
            return ValueError(f"the saved accountant state {what}; it was not written by this run")

        try:
            hist, steps, rows = state["accountant"]["history"], state["steps"], state.get("epochs", [])
        except (KeyError, TypeError, AttributeError):
            raise bad("is not {accountant: {history}, steps, epochs}") from None
        if not isinstance(hist, (list, tuple)) or len(hist) > 1_000_000 or not isinstance(rows, (list, tuple)):
            raise bad("has no list of releases or of epochs")
        total = 0
        for h in hist:
            if not (isinstance(h, (list, tuple)) and len(h) == 3 and _is_count(h[2]) and h[2] >= 1):
                raise bad("holds a release entry that is not (sigma, q, count)")
            if h[0] != self.noise_multiplier or h[1] != self.sample_rate:
                raise bad(f"records releases at sigma/q other than this run's {self.noise_multiplier:g}/"
                          f"{self.sample_rate:g}")
            total += int(h[2])
        if not _is_count(steps) or steps != total:
            raise bad(f"counts {str(steps)[:20]} steps, its releases {total}")
        last = 0
        for r in rows:
            ok = (isinstance(r, dict) and set(r) == {"epoch", "steps", "epsilon", "delta"} and _is_count(r["epoch"])
                  and r["epoch"] == last + 1 and _is_count(r["steps"]) and r["steps"] <= total
                  and isinstance(r["epsilon"], (int, float)) and not isinstance(r["epsilon"], bool)
                  and r["epsilon"] >= 0 and r["delta"] == self.delta)
            if not ok:
                raise bad(f"holds a per-epoch row after epoch {last} that this accountant does not write")
            last = r["epoch"]
        self._acc = _opacus_accountant(self.accountant)
        self._acc.history = [(float(h[0]), float(h[1]), int(h[2])) for h in hist]
        self._steps = total
        self.epochs = [dict(r) for r in rows]
