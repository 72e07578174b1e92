"""p3c: where leakage-worst's accuracy_dataset lands; the GPU summary (markdown rows kept as they are)."""
import json
from pathlib import Path
from ssgd.experiments.readme import SECTIONS
ROOT = Path(__file__).resolve().parents[1]
sec = SECTIONS["leakage-worst"]
d = json.loads((ROOT / sec.source).read_text())
d["accuracy_dataset"] = "[l](http://e.x)<b>x"
f = Path("/tmp/rt_readme/lw.json"); f.write_text(json.dumps(d))
out = sec.render(sec.load(f))
i = out.find("e.x")
print("leakage-worst:", repr(out[max(0, i - 150):i + 40]))
gpu = [s for s in SECTIONS.values() if s.source.endswith(".md")]
for s in gpu:
    src = ROOT / s.source
    print(s.name, s.source, src.exists())
    text = src.read_text() if src.exists() else "torch 2 | GPU x\n\n| isolated step | a |\n|---|---|\n| x | y |\n"
    lines = text.splitlines()
    k = next(i for i, l in enumerate(lines) if l.startswith("| isolated step"))
    lines.insert(k + 2, "| [click me](https://evil.example/phish) ![t](https://evil.example/pixel.png) | 1 |")
    g = Path("/tmp/rt_readme/summary.md"); g.write_text("\n".join(lines))
    out = s.render(s.load(g))
    print([l for l in out.splitlines() if "evil" in l])
