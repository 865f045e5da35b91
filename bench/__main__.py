"""``python -m bench [--quick]``: run the benchmark sections and write bench/results/."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench import accuracy, clickhouse, cluster, fleet, freshness, ingest, pressure, query, report
from bench.common import local_stack

log = logging.getLogger("bench")


async def _sections(args: argparse.Namespace, run_dir: Path) -> dict[str, object]:
    now = datetime.now(UTC)
    results: dict[str, object] = {}
    with local_stack(run_dir) as endpoints:
        if "ingest" in args.sections:
            only = args.contenders.split(",") if args.contenders else None
            results.update(await ingest.run(endpoints, run_dir, args.quick, now, only))
        if "freshness" in args.sections:
            results.update(await freshness.run(endpoints, run_dir, args.quick, now))
        if "clickhouse" in args.sections:
            results.update(await clickhouse.ingest(run_dir, args.quick, now))
        if "query" in args.sections or "clickhouse" in args.sections:
            # The columnar peer's queries need the API's, on the same data and in the same run.
            peers = (clickhouse.measure,) if "clickhouse" in args.sections else ()
            results.update(await query.run(endpoints.redis_url, run_dir, args.quick, peers))
        if "fleet" in args.sections:
            results.update(await fleet.run(endpoints.redis_url, run_dir, args.quick))
        if "cluster" in args.sections:
            results.update(await cluster.run(endpoints.redis_url, run_dir, args.quick))
        if "pressure" in args.sections:
            results.update(await pressure.run(endpoints, run_dir, args.quick))
        if "accuracy" in args.sections and not args.quick:  # 25 s; its figures never change
            results.update(await accuracy.run(endpoints))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="a smaller run, under 3 minutes")
    parser.add_argument(
        "--sections", default="ingest,freshness,clickhouse,query,fleet,cluster,pressure,accuracy"
    )
    parser.add_argument(
        "--contenders",
        default="",
        help="ingest contenders (latest.json keys), run in the order given",
    )
    parser.add_argument("--run-dir", type=Path, default=None)
    args = parser.parse_args()
    args.sections = set(args.sections.split(","))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="devact-bench-") as tmp:
        run_dir = args.run_dir or Path(tmp)
        results = asyncio.run(_sections(args, run_dir))
        written = report.write(results, args.quick, started)  # it copies files of the run dir
    log.info("report: %s", written)
    print(
        json.dumps({k: v for k, v in results.items() if not isinstance(v, list | dict)}, indent=2)
    )


if __name__ == "__main__":
    main()
