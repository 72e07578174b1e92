"""Red team of 2026-12-04 (second pass): a node's release history is replayed one accountant step at a time.

``ReleaseBudget`` reads ``(sigma, count)`` pairs back from the node's ``privacy-ledger`` file (hostile input:
"a damaged ledger refuses every release until the owner fixes it") and ``PrivacyAccountant.step(n)`` loops
``n`` times. A ledger holding one pair with count 10**12 (valid JSON, valid types) makes every charge run for
days -- while ``_charge_ledger`` holds the ledger's exclusive lock, so every ClientApp of that node waits too
(probes/p2_ledger_hostile.py: 10**6 steps take 0.3 s). Opacus's history already stores (sigma, q, steps).

RED TEAM: FAILS on the code of commit 3fe6d59 (hang guard: SIGALRM after 3 s).
"""
from __future__ import annotations

import signal

import pytest

from ssgd.privacy.node import ReleaseBudget


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="needs SIGALRM")
def test_a_huge_count_in_a_stored_history_is_answered_promptly():
    def hang(*_):
        raise TimeoutError("a stored release count of 10**12 is replayed one step at a time")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(3)
    try:
        try:
            ReleaseBudget.from_dict({"sigmas": [1000.0], "counts": [10**12]}, 10.0, 1e-5).charge(1000.0)
        except ValueError:
            pass  # refused in one line: fine
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
