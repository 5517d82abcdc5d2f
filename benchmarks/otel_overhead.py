"""What OpenTelemetry costs notify(): p50 and p99 with it absent, installed without a provider, and traced.

Three modes, each in its own process (a tracer provider is process-global), interleaved
over ROUNDS rounds; medians of the per-round figures:

* ``absent`` — the anchor: ``opentelemetry`` cannot be imported (blocked in sys.modules),
  as when the ``otel`` extra is not installed. Per notification: validation, one enqueue
  on a ``memory://?keep=false`` transport, and the worker's batched delivery.
* ``no_provider`` — opentelemetry-api installed, no tracer provider set: the goal is
  notify() p50 within 5 % of ``absent``.
* ``traced`` — the SDK's TracerProvider with a processor that drops every span: the
  cost of a ``create`` span per notify() and a ``send`` span per batch, what an
  application that traces pays (no goal; reported).

Each process times N calls of ``await notifier.info(...)`` (after a warm-up of N/10),
giving the worker a turn every 100 calls outside the timed region.
Usage: ``python benchmarks/otel_overhead.py [N [ROUNDS]]``; JSON on stdout and in
benchmarks/results/otel_overhead.json.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
MODES = ("absent", "no_provider", "traced")

CHILD = r"""
import sys, tempfile, time
mode, n = sys.argv[1], int(sys.argv[2])
if mode == "absent":
    sys.modules["opentelemetry"] = None  # import opentelemetry -> ImportError, as when not installed
elif mode == "traced":
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
import anyio, anyio.lowlevel
from notifykit import Notifier

PAYLOAD = {"tenant_id": "p-1", "user_id": "u-1", "backup_id": "b-1", "volume_id": "v-1", "size": 10}

async def main():
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        async with Notifier.from_url("memory://?keep=false", publisher_id="bench.h",
                                     dead_letters=f"{tmp}/dl.jsonl") as notifier:
            for i in range(n // 10 + n):
                start = time.perf_counter_ns()
                await notifier.info({}, "backup.create.end", PAYLOAD)
                if i >= n // 10:
                    times.append(time.perf_counter_ns() - start)
                if i % 100 == 99:
                    await anyio.lowlevel.checkpoint()
    times.sort()
    print(times[len(times) // 2] / 1000, times[int(len(times) * 0.99)] / 1000)

anyio.run(main)
"""


def run(mode: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(N)], check=True, capture_output=True, text=True,
                         timeout=600).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    rounds: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    for _ in range(ROUNDS):
        for mode in MODES:
            rounds[mode].append(run(mode))
    p50 = {mode: statistics.median(r[0] for r in rounds[mode]) for mode in MODES}
    p99 = {mode: statistics.median(r[1] for r in rounds[mode]) for mode in MODES}
    ratios = [statistics.median(b[0] / a[0] for a, b in zip(rounds["absent"], rounds[mode], strict=True))
              for mode in MODES]
    result = {
        "n": N, "rounds": ROUNDS,
        "p50_us": p50, "p99_us": p99,
        "p50_ratio_vs_absent": dict(zip(MODES, ratios, strict=True)),
        "goal": "no_provider p50 within 5% of absent (ratio <= 1.05)",
        "goal_met": ratios[1] <= 1.05,
    }
    text = json.dumps(result, indent=2)
    print(text)
    out = Path(__file__).parent / "results" / "otel_overhead.json"
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
