"""ShardedVADEngine against VADEngine in the same run: offline 2 s chunks and 32 ms packets.

    python scripts/bench_shards.py [--workers N] [--quick] [--from-streams N]
                                   [--scenario scaling|packets|live|per-core|all]

``scaling``: 1, 2, 4, ... up to N cores, ``VADEngine(num_workers=n)`` next to ``n`` shards x
1 worker, wall µs per 32 ms frame. ``packets``: 64 interleaved streams of 32 ms packets on N
cores, packets/s and CPU µs per packet in the user's process. ``live``: streams delivering
32 ms packets in real time, the most each engine holds with p99 push-to-processed < 100 ms
(``VADEngine`` with N workers, N shards x 1 worker, N processes each a one-worker
``VADEngine`` pinned to its own CPU). ``per-core``: what one core does (this process
pinned to one CPU, a one-worker ``VADEngine``): 128 streams pushing and flushing 32 ms
packets in a closed loop (packets/s, CPU µs per packet, median of 5 interleaved rounds:
the figure to compare two trees by) and the live capacity. ``--from-streams N`` starts the
live searches at N streams (on a many-core machine: ``--from-streams 1024`` saves the
trials that surely pass). Start-up is not timed. Needs
only numpy, onnxruntime and the package (runs on a machine without internet).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from prevad_rx.bench._scenarios import BenchOptions
from prevad_rx.bench._shards import per_core, shard_live, shard_packets, shard_scaling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--from-streams", type=int, default=0, help="live trials start at this many streams"
    )
    parser.add_argument(
        "--scenario", choices=("scaling", "packets", "live", "per-core", "all"), default="all"
    )
    args = parser.parse_args()
    options = BenchOptions(
        quick=args.quick,
        workers=args.workers,
        progress=lambda m: print(f"[bench] {m}", file=sys.stderr, flush=True),
    )
    if args.from_streams:
        counts = tuple(n for n in options.stream_counts if n >= args.from_streams)
        options.stream_counts = counts or (args.from_streams,)
    results = {}
    if args.scenario in ("scaling", "all"):
        results["shard_scaling"] = shard_scaling(options)
        for key, row in results["shard_scaling"].items():
            if key.startswith("n"):
                print(
                    f"offline, {key[1:]:>2} core(s): VADEngine {row['engine_wall_us']:6.1f} "
                    f"µs/frame, shards {row['shards_wall_us']:6.1f} µs/frame "
                    f"({row['shards_vs_engine']:.2f}x)"
                )
    if args.scenario in ("packets", "all"):
        results["shard_packets"] = shard_packets(options)
        p = results["shard_packets"]
        for name in ("engine", "shards"):
            print(
                f"packets, {p['streams']} streams on {p['cores']} core(s), {name}: "
                f"{p[name]['packets_per_s']:8.0f} packets/s, "
                f"{p[name]['user_process_cpu_us_per_packet']:6.1f} µs CPU/packet in this process"
            )
    if args.scenario in ("live", "all"):
        results["shard_live"] = shard_live(options)
        live = results["shard_live"]
        for name in ("prevad", "shards", "processes"):
            row = live[name]
            more = "" if row["limit_reached"] else "+ (limit not reached)"
            trials = ", ".join(
                f"{t['streams']}: p99 {t['p99_ms']:.0f} ms, {t['cpu_cores']:.1f} cores "
                f"({t['user_cpu_cores']:.2f} pushing)"
                for t in row["trials"]
            )
            print(
                f"live 32 ms, {live['cores']} core(s), {name}: {row['max_streams']}{more} "
                f"streams ({trials})"
            )
    if args.scenario in ("per-core", "all"):
        results["per_core"] = per_core(options)
        core = results["per_core"]
        closed, live = core["closed_loop"], core["live"]
        print(
            f"one core (CPU {core['cpu']}), one-worker VADEngine: closed loop "
            f"{closed['packets_per_s']:.0f} packets/s, {closed['cpu_us_per_packet']:.1f} µs CPU "
            f"per packet ({core['streams']} streams, median of {core['rounds']}); live 32 ms: "
            f"{live['max_streams']} streams at p99 < 100 ms"
        )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
