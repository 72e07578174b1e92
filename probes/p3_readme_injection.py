"""Probe 3: every README/docs generated section, rendered from its committed JSON with ONE string value
replaced by a Markdown/HTML payload (adversary C places the result file). A payload that reaches the
Markdown raw (an HTML tag or a live link) is an injection; a refusal or an escaped payload is fine."""
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from ssgd.experiments.readme import SECTIONS  # noqa: E402

PAYLOADS = ["<img src=x>", "[l](http://e.x)"]


def paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            yield from paths(v, prefix + (i,))
    elif isinstance(obj, str):
        yield prefix


def put(obj, path, value):
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


hits = []
for name, sec in SECTIONS.items():
    src = ROOT / sec.source
    if not src.exists() or not src.suffix == ".json":
        continue
    doc = json.loads(src.read_text())
    tmp = Path("/tmp/rt_readme") / name
    tmp.mkdir(parents=True, exist_ok=True)
    seen = set()
    for path in paths(doc):
        key = tuple(p if isinstance(p, str) else "#" for p in path)
        if key in seen:
            continue
        seen.add(key)
        for pay in PAYLOADS:
            d = copy.deepcopy(doc)
            put(d, path, pay)
            f = tmp / src.name
            f.write_text(json.dumps(d))
            try:
                out = sec.render(sec.load(f))
            except Exception as e:  # refused: fine
                continue
            if pay in out:
                hits.append((name, "/".join(map(str, path)), pay))
for h in hits:
    print("RAW:", *h)
print(f"{len(hits)} raw payloads")
