"""PrivacyAccountant's saved state is hostile input: it never changes what a release costs, and a resumed run
re-derives the count (replay) instead of trusting it."""
from __future__ import annotations

import math

import pytest

from ssgd.privacy import PrivacyAccountant, compute_epsilon


def _acc():
    return PrivacyAccountant(1.0, 0.1, 1e-5)


def test_a_state_round_trips_and_replay_is_the_run_it_describes():
    a = _acc()
    for e in (1, 2):
        a.step(10)
        a.end_epoch(e)
    b = _acc()
    b.load_state_dict(a.state_dict())
    assert (b.steps, b.epsilon(), b.epochs) == (20, a.epsilon(), a.epochs)
    rows = _acc().replay(10, 2)
    assert rows == a.epochs and rows[-1]["epsilon"] == compute_epsilon(1.0, 0.1, 20, 1e-5)


@pytest.mark.parametrize("forge", [
    lambda s: s["accountant"].update(history=[(5.0, 0.1, 20)]),  # releases at a larger sigma: a smaller epsilon
    lambda s: s["accountant"].update(history=[(1.0, 0.01, 20)]),  # ... or a smaller sampling rate
    lambda s: s["accountant"].update(history=[(1.0, 0.1, -3)]),
    lambda s: s["accountant"].update(history="x"),
    lambda s: s.update(steps=7),  # a count that is not its releases'
    lambda s: s.update(steps=True),
    lambda s: s["epochs"][0].update(delta=0.5),
    lambda s: s["epochs"][0].update(epsilon=-1.0),
    lambda s: s["epochs"].reverse(),
    lambda s: s.pop("accountant"),
])
def test_a_forged_state_is_refused_in_one_line(forge):
    a = _acc()
    for e in (1, 2):
        a.step(10)
        a.end_epoch(e)
    state = a.state_dict()
    state["accountant"] = dict(state["accountant"])
    state["epochs"] = [dict(r) for r in state["epochs"]]
    forge(state)
    b = _acc()
    with pytest.raises(ValueError) as e:
        b.load_state_dict(state)
    assert "\n" not in str(e.value)
    assert b.steps == 0 and b.epsilon() == 0.0 and not math.isnan(b.epsilon())  # nothing was taken
