"""Red team of 2026-12-04 (second pass): the config-mismatch refusal prints the hostile file's keys and values
unbounded. ``check_saved_config`` (every ``--resume``) names every differing key -- ``{diff}`` lists all of
them -- and ``repr`` of each saved value: a ``config.json`` with 10,000 extra keys or a 1 MB value gives a
refusal "line" of hundreds of kB (the Flower checkpoint's own mismatch message bounds each value to 40
characters). The rule: bad input gets ONE clear line.

RED TEAM: FAILS on the code of commit 3fe6d59.
"""
from __future__ import annotations

import json

import pytest

from ssgd.report import ConfigMismatchError, check_saved_config


@pytest.mark.parametrize("saved", [
    {"epochs": 1, **{f"k{i}": i for i in range(10_000)}},
    {"epochs": "x" * 1_000_000},
])
def test_a_hostile_config_is_refused_in_one_bounded_line(tmp_path, saved):
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigMismatchError) as e:
        check_saved_config(tmp_path, {"epochs": 2})
    text = str(e.value)
    assert "\n" not in text and len(text) < 2000, f"a refusal of {len(text)} characters"
