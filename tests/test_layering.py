"""The package's layers only look down (docs/architecture.md).

core (transform, optim, wrapper, shards, private _*.py) -> report -> data, models, metrics ->
defenses, attacks, privacy -> distributed -> experiments -> commands -> cli.

Checked on the source text (every import, also the ones inside functions): no import goes
up, none goes sideways between sibling packages of one layer, and no module imports
another package's private names (in the core, where all modules share one package, private
names are shared only through private ``_*.py`` modules).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ssgd"

LAYERS = {
    "core": 0,
    "report": 1,
    "data": 2, "models": 2, "metrics": 2,
    "defenses": 3, "attacks": 3, "privacy": 3,
    "distributed": 4,
    "experiments": 5,
    "commands": 6,
    "cli": 7,
}


def unit_of(module: str) -> str:
    """``ssgd.attacks.engine`` -> ``attacks``; ``ssgd.optim`` -> ``core``; ``ssgd.cli`` -> ``cli``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "core"
    head = parts[1]
    if head == "__main__":
        return "cli"
    if head in LAYERS:
        return head
    return "core"  # transform, optim, wrapper, shards, _private helpers


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve(node: ast.ImportFrom, current: str, is_pkg: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) for every import of ssgd modules in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    current = module_name(path)
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "ssgd" or a.name.startswith("ssgd."):
                    out.append((node.lineno, a.name, []))
        elif isinstance(node, ast.ImportFrom):
            target = resolve(node, current, is_pkg)
            if target == "ssgd" or target.startswith("ssgd."):
                out.append((node.lineno, target, [a.name for a in node.names]))
    return out


def violations() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        me = module_name(path)
        mine = unit_of(me)
        my_pkg = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
        for line, target, names in imports(path):
            where = f"{path.relative_to(SRC.parent)}:{line}"
            theirs = unit_of(target)
            # a "from pkg import sub" may name a submodule: judge that submodule
            if theirs != mine:
                if LAYERS[theirs] > LAYERS[mine]:
                    found.append(f"{where}: {me} ({mine}) imports upwards {target} ({theirs})")
                    continue
                if LAYERS[theirs] == LAYERS[mine]:
                    found.append(f"{where}: {me} ({mine}) imports its sibling {target} ({theirs})")
                    continue
            target_pkg = target.rsplit(".", 1)[0] if "." in target else target
            private_mod = [p for p in target.split(".")[1:] if p.startswith("_") and not p.startswith("__")]
            if private_mod and theirs != mine:
                found.append(f"{where}: {me} imports the private module {target} of another package")
                continue
            private_names = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private_names:
                if mine == "core":
                    ok = theirs == "core" and target.rsplit(".", 1)[-1].startswith("_")
                else:
                    ok = target_pkg == my_pkg or target == my_pkg
                if not ok:
                    found.append(f"{where}: {me} imports private name(s) {private_names} from {target}")
    return found


def test_every_source_module_is_in_a_layer():
    for path in SRC.rglob("*.py"):
        assert unit_of(module_name(path)) in LAYERS


def test_layers_only_look_down():
    bad = violations()
    assert not bad, "layering violations:\n" + "\n".join(bad)


@pytest.mark.parametrize("snippet, expected", [
    ("from ..experiments.train import train\n", "upwards"),
    ("from ..defenses.spec import parse_spec\n", "sibling"),
    ("from ..data.datasets import _cache\n", "private name"),
    ("from ..data._cache import path\n", "private module"),
])
def test_checker_catches_each_kind_of_violation(tmp_path, monkeypatch, snippet, expected):
    """The checker itself must fail on each kind of violation (a checker that cannot fail proves nothing)."""
    fake = tmp_path / "ssgd"
    (fake / "attacks").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "attacks" / "__init__.py").write_text("")
    (fake / "attacks" / "bad.py").write_text(snippet)
    import sys

    mod = sys.modules[__name__]
    monkeypatch.setattr(mod, "SRC", fake)
    bad = violations()
    assert len(bad) == 1 and expected in bad[0], bad
