"""The HTTP service, for real: server processes on loopback, real models, SQLite and PostgreSQL.

Every test runs once per database (``backend``); each server gets a fresh database.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SAMPLE
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from service_harness import Receiver, Server, tiny_clip, upload
from test_bad_input import _truncated, _truncated_faststart
from textmetrics import wer

from reelscope.config import Settings
from reelscope.pipeline import analyzer as analyzer_module
from reelscope.service.app import create_app
from reelscope.store.keys import ApiKeys
from reelscope.store.store import Store


def test_sample_uploaded_and_reported(
    make_server: Callable[..., Server], truth: dict[str, Any]
) -> None:
    server = make_server().start()
    key = server.create_key("app")
    with server.client(key) as api:
        response = upload(api, SAMPLE, "my clip.mp4")
        assert response.status_code == 202, response.text
        video_id = response.json()["id"]
        assert response.headers["location"] == f"/v1/videos/{video_id}"
        body = server.wait_finished(api, video_id)
        assert body["status"] == "done", body["reason"]
        report = body["report"]
        assert report["video"]["filename"] == "my clip.mp4"
        read = {entry["text"] for entry in report["ocr"]}
        assert {c["text"] for c in truth["captions"]} <= read
        assert wer(truth["speech"], report["transcript"]["text"]) <= 0.20
        assert report["transcript"]["segments"][0]["start_s"] < 1.0
        assert len(body["thumbnails"]) >= 10
        jpeg = api.get(body["thumbnails"][0]["url"])
        assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.content[:2] == b"\xff\xd8"

        again = upload(api, SAMPLE, "again.mp4")
        assert again.status_code == 202 and again.json()["id"] == video_id
        assert again.json()["duplicate"] is True
        assert [v["id"] for v in api.get("/v1/videos").json()] == [video_id]
        assert api.get(f"/v1/videos/{video_id}/similar").json() == []

        metrics = httpx.get(server.url + "/metrics").text
    monitor = httpx.get(server.url + "/v1/monitor").json()
    assert [(t["task"], t["state"], t["path"]) for t in monitor["tasks"]] == [
        ("classify", "healthy", "engine"),
        ("ocr_det", "healthy", "engine"),
        ("ocr_rec", "healthy", "engine"),
    ]
    status = server.cli("monitor", "status", "--url", server.url)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("classify: healthy (serving: engine), incidents 0")
    assert report["engines"]["classify"]["path"] == "engine"
    assert report["engines"]["classify"]["fallback_active"] is False
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    jobs = {s.labels["status"]: s.value for s in families["reelscope_jobs"].samples}
    assert jobs == {"queued": 0, "running": 0, "done": 1, "failed": 0}
    assert families["reelscope_queue_depth"].samples[0].value == 0
    stage_counts = {
        s.labels["stage"]: s.value
        for s in families["reelscope_stage_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert stage_counts["ocr"] == 1 and stage_counts["asr"] == 1
    ocr_confidence = [
        s for s in families["reelscope_task_confidence"].samples
        if s.name.endswith("_count") and s.labels["task"] == "ocr"
    ]
    assert ocr_confidence[0].value == len(report["ocr"])
    uploads = [
        s for s in families["reelscope_http_request_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels["route"] == "/v1/videos"
        and s.labels["method"] == "POST"
    ]
    assert sum(s.value for s in uploads) == 2
    fallback = families["reelscope_task_fallback_active"].samples
    assert [(s.labels["task"], s.value) for s in fallback] == [
        ("classify", 0.0), ("ocr_det", 0.0), ("ocr_rec", 0.0)
    ]
    assert families["reelscope_task_requests"].samples[0].value >= 1


def test_keys_are_required_and_isolated(make_server: Callable[..., Server]) -> None:
    server = make_server(workers=0).start()
    alice, bob = server.create_key("alice"), server.create_key("bob")
    with server.client() as anonymous:
        missing = anonymous.get("/v1/videos")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert "missing API key" in missing.json()["error"]["message"]
        assert upload(anonymous, SAMPLE).status_code == 401
    with server.client("rs_not-a-real-key") as forged:
        assert forged.get("/v1/videos").json()["error"]["message"] == "invalid API key"
    with server.client(alice) as a, server.client(bob) as b:
        video_id = upload(a, SAMPLE).json()["id"]
        assert a.get(f"/v1/videos/{video_id}").status_code == 200
        other = b.get(f"/v1/videos/{video_id}")
        assert other.status_code == 404
        assert other.json()["error"]["message"] == f"no video with id {video_id!r}"
        assert b.get(f"/v1/videos/{video_id}/thumbnails/0").status_code == 404
        assert b.get("/v1/videos").json() == []
    listed = server.cli("keys", "list").stdout
    assert "alice" in listed and alice not in listed  # keys are never shown again
    assert server.cli("keys", "revoke", "1").returncode == 0
    with server.client(alice) as a:
        assert a.get("/v1/videos").json()["error"]["message"] == "this API key has been revoked"


def _text(p: Path) -> Path:
    p.write_text("just some notes, not a video\n" * 20)
    return p


def _big(p: Path) -> Path:
    p.write_bytes(SAMPLE.read_bytes() + os.urandom(3_000_000))
    return p


BAD = [
    ("empty", lambda p: (p.write_bytes(b""), p)[1], "empty.mp4", 400,
     "the uploaded file is empty (0 bytes)"),
    ("text", _text, "notes.mp4", 415, "notes.mp4: not a video file (it looks like a text file)"),
    ("truncated", _truncated, "cut.mp4", 422, "the file is truncated or damaged"),
    ("truncated fast start", _truncated_faststart, "cut2.mp4", 422,
     "cut2.mp4: video stops at 6.0 s of 12.0 s; the file is truncated"),
    ("oversized", _big, "big.mp4", 413, "over the 2 MB limit"),
]


def test_bad_uploads_get_a_clear_error_and_change_nothing(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = make_server(workers=0, max_file_mb=2).start()
    key = server.create_key("app")
    with server.client(key) as api:
        for name, make, filename, status, message in BAD:
            response = upload(api, make(tmp_path / filename))
            assert response.status_code == status, (name, response.text)
            assert message in response.json()["error"]["message"], name
        no_file = api.post("/v1/videos", data={"title": "x"})
        assert no_file.status_code == 400
        assert api.get("/v1/videos").json() == []
    assert list(server.spool.iterdir()) == []  # nothing left behind
    health = httpx.get(server.url + "/healthz").json()
    assert health["jobs"] == {"queued": 0, "running": 0, "done": 0, "failed": 0}


def test_duration_and_resolution_limits(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = make_server(workers=0, max_duration_s=5, max_side_px=640).start()
    key = server.create_key("app")
    with server.client(key) as api:
        long = upload(api, SAMPLE, "long.mp4")
        assert long.status_code == 413
        assert long.json()["error"]["message"] == (
            "long.mp4: video is 12.0 s long, over the 5 s limit"
        )
        wide = upload(api, tiny_clip(tmp_path / "wide.mp4", seed=1, size=800))
        assert wide.status_code == 413
        assert "frames are 800x800, over the 640 px limit" in wide.json()["error"]["message"]
        assert upload(api, tiny_clip(tmp_path / "ok.mp4", seed=2)).status_code == 202


def test_jobs_per_key_are_limited(make_server: Callable[..., Server], tmp_path: Path) -> None:
    server = make_server(workers=0, max_jobs_per_key=2).start()
    key, other = server.create_key("app"), server.create_key("other")
    clips = [tiny_clip(tmp_path / f"c{i}.mp4", seed=i) for i in range(3)]
    with server.client(key) as api, server.client(other) as api2:
        assert [upload(api, c).status_code for c in clips[:2]] == [202, 202]
        refused = upload(api, clips[2])
        assert refused.status_code == 429
        assert "limit 2" in refused.json()["error"]["message"]
        assert upload(api2, clips[2]).status_code == 202  # the limit is per key
        assert len(api.get("/v1/videos").json()) == 2


def test_worker_killed_mid_job_and_restarted_completes_it(
    make_server: Callable[..., Server], truth: dict[str, Any]
) -> None:
    server = make_server().start()
    key = server.create_key("app")
    with server.client(key) as api:
        video_id = upload(api, SAMPLE).json()["id"]
        server.wait_status(api, video_id, ("running",), timeout=120, poll_s=0.05)
        server.kill()
        server.start()
        body = server.wait_finished(api, video_id)
    assert body["status"] == "done", body["reason"]
    assert body["attempts"] == 2  # the first run died with its worker
    assert {c["text"] for c in truth["captions"]} <= {e["text"] for e in body["report"]["ocr"]}
    assert "started by" in server.tail(200)


def test_separate_worker_process_killed_and_restarted_completes_the_job(
    make_server: Callable[..., Server], truth: dict[str, Any]
) -> None:
    server = make_server(workers=0).start()  # the HTTP server analyzes nothing itself
    key = server.create_key("app")
    worker = server.worker()
    try:
        with server.client(key) as api:
            video_id = upload(api, SAMPLE).json()["id"]
            server.wait_status(api, video_id, ("running",), timeout=120, poll_s=0.05)
            worker.kill()  # SIGKILL mid-job
            worker.wait()
            assert api.get(f"/v1/videos/{video_id}").json()["status"] == "running"
            worker = server.worker()
            body = server.wait_finished(api, video_id)
    finally:
        worker.terminate()
        worker.wait(60)
    assert body["status"] == "done", body["reason"]
    assert body["attempts"] == 2
    assert {c["text"] for c in truth["captions"]} <= {e["text"] for e in body["report"]["ocr"]}
    assert worker.returncode == 0  # SIGTERM: the worker stops cleanly when idle


def test_hundred_concurrent_uploads_complete_once_each(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    receiver = Receiver().start()
    server = make_server(max_jobs_per_key=200).start()
    key = server.create_key("bulk", webhook=receiver.url)
    clips = [tiny_clip(tmp_path / f"clip{i:03}.mp4", seed=1000 + i) for i in range(100)]

    async def send_all() -> list[httpx.Response]:
        limit = asyncio.Semaphore(16)
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
        ) as api:

            async def send(path: Path) -> httpx.Response:
                async with limit:
                    return await api.post(
                        "/v1/videos", files={"file": (path.name, path.read_bytes())}
                    )

            return await asyncio.gather(*(send(c) for c in clips))

    responses = asyncio.run(send_all())
    refused = [(i, r.status_code, r.text) for i, r in enumerate(responses) if r.status_code != 202]
    assert not refused, (refused, server.tail(60))
    ids = [r.json()["id"] for r in responses]
    assert len(set(ids)) == 100
    with server.client(key) as api:
        finished = [server.wait_finished(api, i) for i in ids]
        assert {b["status"] for b in finished} == {"done"}
        listed = api.get("/v1/videos", params={"limit": 500}).json()
    assert sorted(v["id"] for v in listed) == sorted(ids)
    _wait(lambda: len(receiver.events) >= 100)
    server.stop()  # and a restart must not send anything again
    server.start()
    time.sleep(2)
    receiver.stop()
    assert sorted(receiver.video_ids()) == sorted(ids)
    assert {e["event"] for e in receiver.events} == {"video.done"}
    assert len(set(receiver.ids)) == 100


def test_webhook_event_survives_a_restart(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    receiver = Receiver()  # not listening yet: deliveries fail and are retried
    server = make_server().start()
    key = server.create_key("app", webhook=receiver.url)
    clip = tiny_clip(tmp_path / "one.mp4", seed=7)
    with server.client(key) as api:
        video_id = upload(api, clip).json()["id"]
        assert server.wait_finished(api, video_id)["status"] == "done"
    _wait(lambda: "will retry" in server.tail(200))
    server.kill()
    receiver.start()
    server.start()
    try:
        _wait(lambda: len(receiver.events) >= 1)
        server.stop()
        server.start()
        time.sleep(2)
    finally:
        receiver.stop()
    assert receiver.video_ids() == [video_id]
    assert receiver.events[0]["event"] == "video.done"


def test_reference_added_over_http_is_found_in_an_upload(
    make_server: Callable[..., Server], reencoded_copy: Path
) -> None:
    server = make_server().start()
    key = server.create_key("app")
    with server.client(key) as api:
        with SAMPLE.open("rb") as fh:
            added = api.post(
                "/v1/references", files={"file": ("ref.mp4", fh)}, data={"title": "Song A"}
            )
        assert added.status_code == 201, added.text
        assert added.json()["title"] == "Song A"
        assert api.get("/v1/references").json()[0]["title"] == "Song A"
        video_id = upload(api, reencoded_copy).json()["id"]
        body = server.wait_finished(api, video_id)
    assert [m["title"] for m in body["report"]["copyright"]] == ["Song A"]


def _wait(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_the_worker_takes_the_uploads_hash_and_probe(
    tmp_path: Path, cache_dir: Path, truth: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the server hashed the upload as it arrived and probed it when it checked it: its
    # worker (here in the same process) analyzes the file without hashing or probing again
    settings = Settings.from_env({}, db=str(tmp_path / "db.sqlite"), cache_dir=str(cache_dir),
                                 spool_dir=str(tmp_path / "spool"), workers=1)
    store = Store(settings.database_url)
    secret = ApiKeys(store).create("app").secret
    store.close()

    def read_again(path: Path, *_: Any) -> Any:
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(analyzer_module, "sha256_file", read_again)
    monkeypatch.setattr(analyzer_module, "probe", read_again)
    with TestClient(create_app(settings)) as api:
        api.headers["Authorization"] = f"Bearer {secret}"
        with SAMPLE.open("rb") as fh:
            response = api.post("/v1/videos", files={"file": ("clip.mp4", fh, "video/mp4")})
        assert response.status_code == 202, response.text
        video_id = response.json()["id"]
        deadline = time.monotonic() + 300
        while (body := api.get(f"/v1/videos/{video_id}").json())["status"] not in (
                "done", "failed") and time.monotonic() < deadline:
            time.sleep(0.2)
    assert body["status"] == "done", body["reason"]
    assert {c["text"] for c in truth["captions"]} <= {e["text"] for e in body["report"]["ocr"]}
    assert body["report"]["video"]["filename"] == "clip.mp4"
    assert list(settings.spool_path.iterdir()) == []  # the file and its probe are gone
