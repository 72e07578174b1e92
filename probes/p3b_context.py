"""Show the line each raw payload of p3 lands on (code span or live Markdown)."""
import copy, json
from pathlib import Path
from ssgd.experiments.readme import SECTIONS
ROOT = Path(__file__).resolve().parents[1]
CASES = [("leakage-worst", ["accuracy_dataset"]), ("demo", ["settings", "model"]), ("demo", ["settings", "torch"]),
         ("demo", ["runs", 0, "optimizer"]), ("demo", ["attacks", 0, "run"]), ("demo", ["attacks", 0, "model"]),
         ("demo", ["attacks", 0, "attack"]), ("threads", ["command"]), ("threads", ["torch"]), ("threads", ["date"])]
for name, path in CASES:
    sec = SECTIONS[name]
    d = json.loads((ROOT / sec.source).read_text())
    o = d
    for p in path[:-1]:
        o = o[p]
    o[path[-1]] = "[l](http://e.x)<b>x"
    f = Path("/tmp/rt_readme") / (name + ".json"); f.write_text(json.dumps(d))
    out = sec.render(sec.load(f))
    lines = [l for l in out.splitlines() if "e.x" in l]
    print(name, path, "->", lines[0][:300] if lines else None)
