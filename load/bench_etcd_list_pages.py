"""etcd's cost of Typha's list by page size: ``python -m load.bench_etcd_list_pages
--endpoints 150000 --sizes 1000,10000 --rounds 2``. On a fresh copy of the bench-vs-go etcd
data, the datastore's gRPC client lists every /calico/ key (pages pinned to one revision, as
the datastore does) once per page size and round, alternating; prints etcd's CPU-seconds, the
wall time and this process's CPU-seconds for each list."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import trio

from typha.sync.etcd_grpc import GrpcEtcdClient

from .bench_vs_go import DATA_ROOT, REPO, etcd_on, prepare_data, tree_cpu_rss


async def list_all(url: str, page_size: int) -> int:
    client = GrpcEtcdClient([url])
    n = 0
    try:
        pages = client.range_paginated(b"/calico/", None, page_size, range_end=b"/calico0")
        async for page in pages:
            n += len(page.kvs)
    finally:
        await client.aclose()
    return n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoints", type=int, default=150000)
    p.add_argument("--sizes", default="1000,10000")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args(argv)
    log = REPO / ".load-results" / "etcd-list-pages.log"
    log.parent.mkdir(exist_ok=True)
    template = prepare_data(a.endpoints, log)
    work = Path(DATA_ROOT) / "etcd-list-pages"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        shutil.copytree(template / "data", work / "data")
        with etcd_on(work / "data", log) as (url, etcd):
            for _ in range(a.rounds):
                for size in (int(s) for s in a.sizes.split(",")):
                    e0 = tree_cpu_rss(etcd.pid)[0]
                    t0, c0 = time.perf_counter(), time.process_time()
                    keys = trio.run(list_all, url, size)
                    row = {
                        "page_size": size,
                        "keys": keys,
                        "etcd_cpu_s": round(tree_cpu_rss(etcd.pid)[0] - e0, 2),
                        "wall_s": round(time.perf_counter() - t0, 2),
                        "client_cpu_s": round(time.process_time() - c0, 2),
                    }
                    print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
