"""The package's layers only look down (docs/architecture.md).

core (transform, optim, wrapper, shards, loop, specs, registry, private _*.py) -> report -> data, models, metrics ->
defenses, attacks, privacy -> distributed -> experiments -> commands -> cli.

Checked on the source text of every module under ``src/ssgd`` (every import, also the ones
inside functions):

* every module belongs to a unit of the layer map: a new subpackage or top-level module is
  refused until it is given a layer here (and in docs/architecture.md);
* no import goes up, none goes sideways between sibling packages of one layer;
* ``from ssgd import x`` and ``from .. import x`` are judged by the submodule ``x`` when ``x`` is
  one, not by the package it is imported from;
* dynamic imports count: ``importlib.import_module`` / ``__import__`` / ``runpy.run_module`` /
  ``find_spec`` of a constant or an f-string with a constant prefix, and every string constant
  that names an ``ssgd`` module (``"ssgd.experiments.ddp_train"`` handed to a launcher is a
  dependency too); a dynamic import whose target cannot be read off the file is refused;
* no module imports another package's private names (in the core, where all modules share one
  package, private names are shared only through private ``_*.py`` modules).

import-linter's ``layers`` contract (``|`` for independent siblings, ``exhaustive`` for the map)
expresses the order, the siblings and the map, but not dynamic imports, module names in
strings or the private-name rule, and it would add a dependency for half the job; so the
checker stays here, and :func:`test_checker_catches_each_kind_of_violation` plants every
hole in a scratch tree.
"""

from __future__ import annotations

import ast
import re
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
# top-level modules of the package (``ssgd.<name>``) that are not subpackages
TOP_LEVEL = {"transform": "core", "optim": "core", "wrapper": "core", "shards": "core", "specs": "core",
             "registry": "core", "loop": "core", "_numerics": "core", "_state": "core", "cli": "cli", "__main__": "cli"}
DYNAMIC_IMPORTERS = {"import_module", "__import__", "run_module", "find_spec"}
MODULE_STRING = re.compile(r"^ssgd(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def unit_of(module: str) -> str | None:
    """``ssgd.attacks.engine`` -> ``attacks``; ``ssgd.optim`` -> ``core``; ``ssgd`` -> ``core``; an unmapped
    subpackage or top-level module -> ``None``."""
    parts = module.split(".")
    if parts[0] != "ssgd":
        return None
    if len(parts) == 1:
        return "core"
    head = parts[1]
    if head in TOP_LEVEL:
        return TOP_LEVEL[head]
    if head in LAYERS and head not in ("core", "cli"):
        return head
    return None


def module_name(path: Path, src: Path) -> str:
    rel = path.relative_to(src.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_module(name: str, src: Path) -> bool:
    """Whether ``name`` (``ssgd.a.b``) is a module or package in the tree rooted at ``src``."""
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    return (src / rel).with_suffix(".py").is_file() or (src / rel / "__init__.py").is_file()


def _relative(level: int, module: str | None, current: str, is_pkg: bool) -> str:
    base = current.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _prefix(arg: ast.expr, current: str, my_pkg: str) -> str | None:
    """The module named by a dynamic import's argument, as far as it can be read off the source:
    a constant, or the constant prefix of an f-string (``{__name__}``/``{__package__}`` resolved),
    cut back to its last whole package. ``None`` if nothing can be read."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        s = arg.value
        return _relative(len(s) - len(s.lstrip(".")), s.lstrip(".") or None, current, current == my_pkg) \
            if s.startswith(".") else s
    if isinstance(arg, ast.JoinedStr):
        text, whole = "", True
        for part in arg.values:
            if isinstance(part, ast.Constant):
                text += str(part.value)
            elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name) \
                    and part.value.id in ("__name__", "__package__"):
                text += current if part.value.id == "__name__" else my_pkg
            else:
                whole = False
                break
        if not whole:
            text = text.rsplit(".", 1)[0] if "." in text else ""
        return text or None
    return None


def imports(path: Path, src: Path) -> list[tuple[int, str, str]]:
    """(line, imported ssgd module, how) for every import of an ssgd module in ``path``.

    ``how`` is ``import``, ``dynamic``, ``string`` or ``unjudged`` (a dynamic import whose target
    cannot be read). ``from pkg import name`` yields ``pkg.name`` where that is a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    current = module_name(path, src)
    is_pkg = path.name == "__init__.py"
    my_pkg = current if is_pkg else current.rsplit(".", 1)[0]
    docs = _docstrings(tree)
    out: list[tuple[int, str, str]] = []
    names_a_module = False
    pending: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, "import") for a in node.names
                    if a.name == "ssgd" or a.name.startswith("ssgd.")]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or "" if node.level == 0 else _relative(node.level, node.module, current, is_pkg)
            if target == "ssgd" or target.startswith("ssgd."):
                subs = [f"{target}.{a.name}" for a in node.names if is_module(f"{target}.{a.name}", src)]
                plain = [a for a in node.names if not is_module(f"{target}.{a.name}", src)]
                out += [(node.lineno, s, "import") for s in subs]
                if plain:
                    out.append((node.lineno, target, "import:" + ",".join(a.name for a in plain)))
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else None
            if name in DYNAMIC_IMPORTERS and node.args:
                docs.add(id(node.args[0]))  # judged here, not again as a string
                target = _prefix(node.args[0], current, my_pkg)
                if target is None:
                    pending.append(node.lineno)
                elif target == "ssgd" or target.startswith("ssgd."):
                    out.append((node.lineno, target, "dynamic"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if MODULE_STRING.match(node.value):
                names_a_module = True
                out.append((node.lineno, node.value, "string"))
    # ``import_module(name)`` with a computed name is judged through the module-name strings of the file
    # (a lazy loader's table); with none, nothing says what it loads
    if not names_a_module:
        out += [(line, "?", "unjudged") for line in pending]
    return out


def _unit_of_module(path: Path, src: Path) -> str | None:
    return unit_of(module_name(path, src))


def violations(src: Path = SRC) -> list[str]:
    found = []
    for path in sorted(src.rglob("*.py")):
        me = module_name(path, src)
        mine = unit_of(me)
        where0 = path.relative_to(src.parent)
        if mine is None:
            found.append(f"{where0}: {me} is in no layer; add its unit to LAYERS/TOP_LEVEL in tests/test_layering.py "
                         "and docs/architecture.md")
            continue
        my_pkg = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
        for line, target, how in imports(path, src):
            where = f"{where0}:{line}"
            if how == "unjudged":
                found.append(f"{where}: {me} imports a module computed at run time; name it in a string constant "
                             "so that its layer can be judged")
                continue
            theirs = unit_of(target)
            if theirs is None:
                found.append(f"{where}: {me} ({mine}) imports {target}, which is in no layer")
                continue
            kind = "" if how.startswith("import") else f" ({how})"
            if theirs != mine:
                if LAYERS[theirs] > LAYERS[mine]:
                    found.append(f"{where}: {me} ({mine}) imports upwards {target} ({theirs}){kind}")
                    continue
                if LAYERS[theirs] == LAYERS[mine]:
                    found.append(f"{where}: {me} ({mine}) imports its sibling {target} ({theirs}){kind}")
                    continue
            private_mod = [p for p in target.split(".")[1:] if p.startswith("_") and not p.startswith("__")]
            if private_mod and theirs != mine:
                found.append(f"{where}: {me} imports the private module {target} of another package")
                continue
            names = how.split(":", 1)[1].split(",") if how.startswith("import:") else []
            private_names = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private_names:
                target_pkg = target.rsplit(".", 1)[0] if "." in target else target
                if mine == "core":
                    ok = theirs == "core" and target.rsplit(".", 1)[-1].startswith("_")
                else:
                    ok = target_pkg == my_pkg or target == my_pkg
                if not ok:
                    found.append(f"{where}: {me} imports private name(s) {private_names} from {target}")
    return found


def test_every_source_module_is_in_a_layer():
    unmapped = [str(p.relative_to(SRC.parent)) for p in SRC.rglob("*.py") if _unit_of_module(p, SRC) is None]
    assert not unmapped, f"modules in no layer (add them to LAYERS/TOP_LEVEL): {unmapped}"


def test_layers_only_look_down():
    bad = violations()
    assert not bad, "layering violations:\n" + "\n".join(bad)


def _scratch(root: Path, planted: dict[str, str]) -> Path:
    """A scratch ``ssgd`` tree with one module per layer that imports may point at, plus ``planted``."""
    src = root / "ssgd"
    files = {"__init__.py": "", "transform.py": "", "cli.py": "", "attacks/__init__.py": "",
             "attacks/base.py": "", "data/__init__.py": "", "experiments/__init__.py": "",
             "experiments/train.py": "", "commands/__init__.py": "", "defenses/__init__.py": "",
             "defenses/spec.py": "", "data/datasets.py": "", "data/_cache.py": "", **planted}
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    return src


@pytest.mark.parametrize("planted, expected", [
    ({"attacks/bad.py": "from ..experiments.train import train\n"}, "upwards ssgd.experiments.train"),
    ({"attacks/bad.py": "from ..defenses.spec import parse_spec\n"}, "sibling ssgd.defenses.spec"),
    ({"attacks/bad.py": "from ..data.datasets import _cache\n"}, "private name"),
    ({"attacks/bad.py": "from ..data._cache import path\n"}, "private module"),
    ({"attacks/bad.py": "import ssgd.cli\n"}, "upwards ssgd.cli"),
    # the holes of issue 22 item 4: the submodule named in ``from <package> import x`` is judged
    ({"attacks/bad.py": "from .. import experiments\n"}, "upwards ssgd.experiments"),
    ({"attacks/bad.py": "from ssgd import cli\n"}, "upwards ssgd.cli"),
    ({"attacks/bad.py": "def f():\n    from ssgd import data, experiments\n"}, "upwards ssgd.experiments"),
    # dynamic imports
    ({"attacks/bad.py": "import importlib\nm = importlib.import_module('ssgd.experiments.train')\n"},
     "upwards ssgd.experiments.train (experiments) (dynamic)"),
    ({"attacks/bad.py": "m = __import__('ssgd.cli')\n"}, "upwards ssgd.cli (cli) (dynamic)"),
    ({"attacks/bad.py": "from importlib import import_module\ndef f(x):\n    return import_module(f'ssgd.commands.{x}')\n"},
     "upwards ssgd.commands (commands) (dynamic)"),
    ({"attacks/bad.py": "import importlib\ndef f(x):\n    return importlib.import_module(x)\n"},
     "computed at run time"),
    ({"attacks/bad.py": "def launch(module='ssgd.experiments.train'):\n    pass\n"}, "upwards ssgd.experiments.train (experiments) (string)"),
    # units missing from the layer map
    ({"plugins/__init__.py": "", "plugins/x.py": ""}, "ssgd.plugins is in no layer"),
    ({"helpers.py": ""}, "ssgd.helpers is in no layer"),
])
def test_checker_catches_each_kind_of_violation(tmp_path, planted, expected):
    """The checker itself must fail on each kind of violation (a checker that cannot fail proves nothing)."""
    src = _scratch(tmp_path, planted)
    bad = violations(src)
    assert bad and any(expected in b for b in bad), bad
    assert violations(_scratch(tmp_path / "clean", {})) == []


@pytest.mark.parametrize("ok", [
    "from .. import data\nfrom . import base\nfrom ..data import datasets\n",
    "from ssgd import transform\nfrom ssgd import unit_\nimport ssgd\nfrom ..transform import x\n",
    "import importlib\ndef f(n):\n    return importlib.import_module(f'{__name__}.{n}')\n",
    "import importlib\nM = {'a': 'ssgd.data.datasets'}\ndef f(k):\n    return importlib.import_module(M[k])\n",
    "def f():\n    '''see ssgd.experiments.train'''\n    log = 'ssgd.attacks'\n",
])
def test_checker_accepts_downward_and_local_imports(tmp_path, ok):
    assert violations(_scratch(tmp_path, {"attacks/good.py": ok})) == []
