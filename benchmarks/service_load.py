"""The service under load on loopback: many uploads at once, SQLite against PostgreSQL.

    .venv/bin/python benchmarks/service_load.py [--videos 200] [--concurrency 16]

For each database: a real ``reelscope serve`` (one worker) on a fresh database, a key
with a webhook to a receiver in this process, --videos distinct 1 s clips (96x96, so
that the queue, the database and the HTTP layer are measured rather than the models)
uploaded with at most --concurrency in flight. Reported: upload latency percentiles,
uploads/s, time until every job is done (jobs/s) and until every completion event
has been received.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]

from machine import stamp  # noqa: E402
from service_harness import Receiver, Server, tiny_clip  # noqa: E402

PG_ADMIN = os.environ.get("REELSCOPE_TEST_PG",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


async def upload_all(server: Server, key: str, clips: list[Path], concurrency: int
                     ) -> tuple[list[float], list[str], float]:
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=120,
                                 headers={"Authorization": f"Bearer {key}"}) as api:

        async def one(path: Path) -> str:
            async with limit:
                start = time.perf_counter()
                r = await api.post("/v1/videos", files={"file": (path.name, path.read_bytes())})
                latencies.append(time.perf_counter() - start)
                r.raise_for_status()
                return str(r.json()["id"])

        start = time.perf_counter()
        ids = await asyncio.gather(*(one(c) for c in clips))
        return latencies, ids, time.perf_counter() - start


def measure(db: str, work: Path, cache: Path, clips: list[Path], concurrency: int
            ) -> dict[str, object]:
    receiver = Receiver().start()
    server = Server(db, work, cache, {"max_jobs_per_key": len(clips) + 10,
                                      "webhook_backoff_s": 0.2}).start()
    try:
        key = server.create_key("load", webhook=receiver.url)
        with server.client(key) as api:  # models loaded and warm before the clock starts
            warm = api.post("/v1/videos", files={"file": ("w.mp4", clips[0].read_bytes())})
            server.wait_finished(api, warm.json()["id"])
        t0 = time.perf_counter()
        latencies, ids, upload_s = asyncio.run(upload_all(server, key, clips[1:], concurrency))
        with server.client(key) as api:
            for video_id in ids:
                body = server.wait_finished(api, video_id, timeout=900)
                if body["status"] != "done":
                    raise SystemExit(f"{video_id}: {body['reason']}")
        done_s = time.perf_counter() - t0
        while len(set(receiver.video_ids())) < len(ids) + 1:
            time.sleep(0.05)
        events_s = time.perf_counter() - t0
    finally:
        server.stop()
        receiver.stop()
    q = statistics.quantiles(latencies, n=100)
    return {
        "uploads": len(ids),
        "upload_latency_ms": {"p50": round(1000 * q[49], 1), "p95": round(1000 * q[94], 1),
                              "max": round(1000 * max(latencies), 1)},
        "uploads_per_s": round(len(ids) / upload_s, 1),
        "all_done_s": round(done_s, 2),
        "jobs_per_s": round(len(ids) / done_s, 1),
        "all_events_received_s": round(events_s, 2),
        "duplicate_events": len(receiver.video_ids()) - len(set(receiver.video_ids())),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    result: dict[str, object] = {
        **stamp(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clips = [tiny_clip(work / f"c{i}.mp4", seed=50_000 + i) for i in range(args.videos + 1)]
        cache = work / "cache"
        result["sqlite"] = measure(str(work / "load.db"), work / "sqlite", cache, clips,
                                   args.concurrency)
        print("sqlite", result["sqlite"], flush=True)
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        name = f"reelscope_load_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            result["postgresql"] = measure(PG_ADMIN.rsplit("/", 1)[0] + "/" + name,
                                           work / "pg", cache, clips, args.concurrency)
            print("postgresql", result["postgresql"], flush=True)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
