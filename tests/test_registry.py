from dataclasses import dataclass
from typing import ClassVar

import pytest

from ssgd.registry import Registry, spec_of


def test_registry_builds_validates_and_writes_back_specs():
    reg = Registry("widget")

    @reg.register
    @dataclass
    class Widget:
        name: ClassVar[str] = "widget"
        size: float = 1.0
        count: int = 2

        def validate(self):
            if self.count < 1:
                raise ValueError(f"widget: count={self.count} must be >= 1")

    w = reg.build("widget:size=0.5", count=3)
    assert (w.size, w.count) == (0.5, 3) and spec_of(w) == "widget:size=0.5,count=3"
    assert reg.names() == ["widget"] and reg.build(spec_of(w)) == w
    with pytest.raises(ValueError, match="unknown widget 'gadget'; known widgets: widget"):
        reg.build("gadget")
    with pytest.raises(ValueError, match="count=0 must be >= 1"):
        reg.build("widget:count=0")
    with pytest.raises(ValueError, match="unknown parameter 'colour'"):
        reg.build("widget:colour=red")


def test_attacks_and_defences_share_the_one_registry():
    from ssgd.attacks import base as attacks_base
    from ssgd.defenses import base as defenses_base

    assert isinstance(attacks_base._REGISTRY, Registry) and isinstance(defenses_base._REGISTRY, Registry)
    assert attacks_base.ATTACKS is attacks_base._REGISTRY.classes
    assert defenses_base.DEFENSES is defenses_base._REGISTRY.classes
