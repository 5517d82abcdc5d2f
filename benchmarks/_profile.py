"""Profile the hot path Notifier → dispatcher → transport (issue 18's findings come from here).

The machine is shared, so the repeatable figure is callgrind's instruction count: the
same run with N1 and N2 notifications, ``(I2 - I1) / (N2 - N1)`` instructions per
notification, start-up and imports cancelled out. Modes:

* ``python benchmarks/_profile.py run N [URL]`` — N notifications through one Notifier
  (default ``memory://?keep=false``), nothing else: what the profilers watch;
* ``python benchmarks/_profile.py callgrind [URL] [--save]`` — instructions per notification,
  in all and by C function (callgrind_annotate's self cost); ``--save`` keeps the result in
  ``benchmarks/results/_profile.json`` for docs/performance.md;
* ``python benchmarks/_profile.py pyinstrument N [URL]`` — pyinstrument's call tree;
* py-spy on any benchmark: ``py-spy record -r 500 -f raw -o out.txt -- python benchmarks/…``.

Not run by ``make bench`` (its name starts with an underscore); needs valgrind, and
pyinstrument / py-spy from PyPI for those modes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from notifykit import Notifier  # noqa: E402

PAYLOAD: dict[str, Any] = {
    "tenant_id": "p-1", "user_id": "u-1", "backup_id": "b-1", "volume_id": "v-1", "size": 10,
    "status": "creating", "display_name": "nightly", "availability_zone": "nova", "percentage": 42.5,
}
CTX = {"request_id": "req-1", "project_id": "p-1", "user_id": "u-1"}
DEFAULT_URL = "memory://?keep=false&queue_size=10000"


async def run(n: int, url: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Notifier.from_url(url, publisher_id="bench", dead_letters=Path(tmp) / "dl.jsonl",
                                     close_timeout=600) as notifier:
            for i in range(n):
                await notifier.info(CTX, "backup.createprogress", {**PAYLOAD, "i": i})
                if i % 100 == 99:
                    await anyio.lowlevel.checkpoint()
        (stats,) = notifier.stats().values()
        assert stats.sent == n, stats


def _self_costs(annotate: str) -> dict[str, int]:
    """callgrind_annotate's self cost per C function, keyed by a short name."""
    costs: dict[str, int] = {}
    for line in annotate.splitlines():
        match = re.match(r"^\s*([\d,]+) \([^)]*\)\s+(.*?)(?: \[.*\])?$", line)
        if match and "PROGRAM TOTALS" not in line:
            name = re.sub(r"^.*/Python-[\d.]+/", "", match.group(2))
            costs[name] = costs.get(name, 0) + int(match.group(1).replace(",", ""))
    return costs


def callgrind(url: str, n1: int = 2_000, n2: int = 12_000) -> dict[str, Any]:
    """Instructions per notification, in all and by C function (the difference of two runs)."""
    counts, costs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (n1, n2):
            out = Path(tmp) / f"callgrind.{n}"
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
                            "run", str(n), url], check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"})
            text = out.read_text(errors="replace")
            counts[n] = int(re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
            annotate = subprocess.run(["callgrind_annotate", "--threshold=100", str(out)], check=True,
                                      capture_output=True, text=True).stdout
            costs[n] = _self_costs(annotate)
    per = (counts[n2] - counts[n1]) / (n2 - n1)
    by_function = {name: (costs[n2].get(name, 0) - costs[n1].get(name, 0)) / (n2 - n1) for name in costs[n2]}
    top = sorted(by_function.items(), key=lambda item: -item[1])[:30]
    return {"url": url, "instructions_per_notification": round(per), "runs": counts,
            "per_notification_by_c_function": {name: round(v) for name, v in top}}


def main(argv: list[str]) -> int:
    mode = argv[0] if argv else "callgrind"
    if mode == "run":
        anyio.run(run, int(argv[1]), argv[2] if len(argv) > 2 else DEFAULT_URL)
    elif mode == "callgrind":
        args = [a for a in argv[1:] if a != "--save"]
        result = callgrind(args[0] if args else DEFAULT_URL)
        result["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        if "--save" in argv:  # run_all.py renders it on docs/performance.md
            (ROOT / "benchmarks" / "results" / "_profile.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    elif mode == "pyinstrument":
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002, async_mode="disabled")
        profiler.start()
        anyio.run(run, int(argv[1]), argv[2] if len(argv) > 2 else DEFAULT_URL)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
