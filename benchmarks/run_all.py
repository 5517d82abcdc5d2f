"""``make bench``: run every benchmark, keep its JSON, and draw a PNG chart per benchmark.

Results go to ``benchmarks/results/NAME.json`` and charts to ``docs/img/bench-NAME.png``
(both committed with docs/performance.md, which quotes them). Each chart shows the
benchmark's throughput (…per_s) or latency (…_us) figures side by side, so the baseline
measured in the same run stands next to notifykit.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / "docs" / "img"
#: (pattern on the dotted key path, axis label); max_us is left out: one GC pause dwarfs the rest.
UNITS = ((r"(?<!max)_us$", "µs (lower is better)"), (r"msgs_per_s", "messages per second (higher is better)"),
         (r"mib_s$", "MiB per second (higher is better)"))
SKIP = {"run_all.py", "_faults.py"}


def leaves(data: Any, prefix: str = "") -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            out.extend(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, int | float) and not isinstance(data, bool):
        out.append((prefix, float(data)))
    return out


def chart(name: str, data: dict[str, Any]) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = []
    for pattern, label in UNITS:
        rows = [(k, v) for k, v in leaves(data) if re.search(pattern, k) and not k.startswith("target")]
        if rows:
            groups.append((label, rows))
    if not groups:
        return None
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 1.2 + 0.45 * sum(len(r) for _, r in groups)), squeeze=False)
    for ax, (label, rows) in zip(axes[:, 0], groups, strict=True):
        names = [re.sub(r"^results\.", "", k) for k, _ in rows]
        values = [v for _, v in rows]
        bars = ax.barh(names, values, color=["#3b7dd8" if any(w in n for w in ("notifykit", "notify_", "notifications_on")) else "#999999"
                                                 for n in names])
        ax.bar_label(bars, labels=[f"{v:,.1f}" for v in values], padding=3, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(label)
        ax.tick_params(axis="y", labelsize=8)
        ax.margins(x=0.2)
    fig.suptitle(name, fontsize=11)
    fig.tight_layout()
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / f"bench-{name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main() -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    only = set(sys.argv[1:])
    failures = 0
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        if script.name in SKIP or (only and script.stem not in only):
            continue
        print(f"== {script.name}", flush=True)
        started = time.time()
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            failures += 1
            continue
        data = json.loads(proc.stdout[proc.stdout.index("{"):])
        data.setdefault("measured", {
            "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "seconds": round(time.time() - started, 1),
            "host": f"{platform.machine()}, {platform.python_version()}",
        })
        (RESULTS / f"{script.stem}.json").write_text(json.dumps(data, indent=2) + "\n")
        png = chart(script.stem, data)
        print(f"   -> benchmarks/results/{script.stem}.json" + (f", {png.relative_to(ROOT)}" if png else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
