"""`kis-stream bench`: measured throughput and latency of each hot path.

Each benchmark lives beside the code it measures and registers here; results are printed
as a table and, with --json, as one JSON document for docs/benchmarks.md.
"""

from __future__ import annotations

import click

from kis_stream.cli import LazyGroup

# name -> "module:attr" of a click command.
BENCHES: dict[str, str] = {
    "sim": "simulator.bench_sim:bench_sim",
    "produce": "producer.bench_produce:bench_produce",
    "decode": "producer.bench_decode:decode_bench",
    "process": "processors.bench_process:bench_process",
}


@click.group(cls=LazyGroup, lazy=BENCHES)
def bench() -> None:
    """Benchmarks of the hot paths (figures go to docs/benchmarks.md)."""
