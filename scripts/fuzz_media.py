"""Mutated copies of a video and a harness that analyzes each one, for robustness:
no crash, no hang, bounded memory, one clear line per refused file, the database
unchanged by a refused file.

    python scripts/fuzz_media.py make SOURCE.mp4 OUT_DIR [--count 40] [--seed 0]
    python scripts/fuzz_media.py run OUT_DIR --db DB --cache CACHE [--timeout 60] [--out R.json]

Mutations (seeded, so a corpus can be made again): random bit flips anywhere, bit flips
in the file's index (the MP4 ``moov`` box), truncations, two sibling boxes swapped,
a box's size field rewritten, and a range of bytes zeroed or repeated.

``run`` analyzes the files one after another in a child process that loads the models
once; a file that takes longer than ``--timeout`` seconds is a hang (the child is killed
and a new one goes on with the next file); a child that dies is a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import resource
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

MUTATIONS = ("flip", "flip_index", "truncate", "swap_boxes", "box_size", "zero", "repeat")


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[int, int, bytes]]:
    """(offset, size, type) of the MP4 boxes between ``start`` and ``end``."""
    end = len(data) if end is None else end
    out, pos = [], start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1 and pos + 16 <= end:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        if size < 8 or pos + size > end:
            break
        out.append((pos, size, kind))
        pos += size
    return out


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    buf = bytearray(data)
    top = boxes(data)
    moov = next(((o, s) for o, s, k in top if k == b"moov"), (0, min(len(data), 4096)))
    if kind == "flip":
        for _ in range(rng.randint(1, 64)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == "flip_index":
        for _ in range(rng.randint(1, 8)):
            buf[moov[0] + rng.randrange(moov[1])] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        return bytes(buf[: rng.randrange(1, len(buf))])
    elif kind == "swap_boxes":
        inner = boxes(data, moov[0] + 8, moov[0] + moov[1])
        siblings = inner if len(inner) >= 2 and rng.random() < 0.5 else top
        if len(siblings) >= 2:
            (a, sa, _), (b, sb, _) = sorted(rng.sample(siblings, 2))
            return bytes(buf[:a] + buf[b : b + sb] + buf[a + sa : b] + buf[a : a + sa]
                         + buf[b + sb :])
    elif kind == "box_size":
        inner = boxes(data, moov[0] + 8, moov[0] + moov[1]) or top
        offset, size, _ = rng.choice(inner)
        new = rng.choice([0, 1, 7, size // 2, size * 2, 0xFFFFFFFF])
        buf[offset : offset + 4] = struct.pack(">I", new)
    elif kind == "zero":
        at = rng.randrange(len(buf))
        n = rng.randint(1, 65536)
        buf[at : at + n] = bytes(len(buf[at : at + n]))
    elif kind == "repeat":
        at = rng.randrange(len(buf))
        n = rng.randint(1, 65536)
        return bytes(buf[: at + n] + buf[at : at + n] + buf[at + n :])
    return bytes(buf)


def make(source: Path, out: Path, count: int, seed: int) -> list[Path]:
    data = source.read_bytes()
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    made = []
    for i in range(count):
        kind = MUTATIONS[i % len(MUTATIONS)]
        path = out / f"{i:03d}-{kind}.mp4"
        path.write_bytes(mutate(data, kind, rng))
        made.append(path)
    return made


def child(files: list[str], db: str, cache: str) -> None:
    """Analyze each file; one JSON line per file on stdout."""
    from reelscope.config import Settings
    from reelscope.errors import InputError, ReelscopeError
    from reelscope.pipeline.analyzer import Analyzer
    from reelscope.pipeline.runtime import Runtime
    from reelscope.store.store import Store

    settings = Settings.from_env({}, db=db, cache_dir=cache)
    store = Store(settings.database_url)
    analyzer = Analyzer(settings, store, Runtime(settings))
    for name in files:
        print(json.dumps({"start": name}), flush=True)
        before = store.count_videos()
        outcome: dict[str, Any] = {"file": name}
        try:
            analyzer.analyze(Path(name), force=True)
            outcome["result"] = "analyzed"
        except InputError as exc:
            outcome.update(result="refused", message=str(exc))
        except ReelscopeError as exc:
            outcome.update(result="error", message=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug: what the CLI reports as an internal error
            outcome.update(result="internal error", message=f"{type(exc).__name__}: {exc}")
        outcome["stored"] = store.count_videos() - before
        outcome["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(outcome), flush=True)


def run(files: list[Path], db: Path, cache: Path, timeout_s: float) -> list[dict[str, Any]]:
    """Analyze ``files`` in child processes; each outcome, hangs and crashes included."""
    left = [str(f) for f in files]
    results: list[dict[str, Any]] = []
    while left:
        proc = subprocess.Popen(
            [sys.executable, __file__, "child", "--db", str(db), "--cache", str(cache), *left],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()

        def pump(out: Any = proc.stdout, lines: queue.SimpleQueue[str | None] = lines) -> None:
            for line in out:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        current = None
        while True:
            try:
                line = lines.get(timeout=timeout_s if current is not None else 600)
            except queue.Empty:  # the file being analyzed took too long
                proc.kill()
                proc.wait()
                results.append({"file": current, "result": "hang",
                                "message": f"over {timeout_s:g} s"})
                left.remove(str(current))
                break
            if line is None:  # the child ended
                proc.wait()
                if current is not None:  # inside a file: a crash
                    results.append({"file": current, "result": "crash",
                                    "message": f"exit code {proc.returncode}"})
                    left.remove(current)
                elif left:
                    raise RuntimeError(f"the child stopped before {left[0]}")
                break
            record = json.loads(line)
            if "start" in record:
                current = record["start"]
            else:
                results.append(record)
                left.remove(record["file"])
                current = None
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("source", type=Path)
    m.add_argument("out", type=Path)
    m.add_argument("--count", type=int, default=40)
    m.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run")
    r.add_argument("folder", type=Path)
    r.add_argument("--db", type=Path, required=True)
    r.add_argument("--cache", type=Path, required=True)
    r.add_argument("--timeout", type=float, default=60.0)
    r.add_argument("--out", type=Path)
    c = sub.add_parser("child")
    c.add_argument("--db", required=True)
    c.add_argument("--cache", required=True)
    c.add_argument("files", nargs="*")
    args = ap.parse_args()
    if args.cmd == "make":
        for path in make(args.source, args.out, args.count, args.seed):
            print(path)
    elif args.cmd == "child":
        child(args.files, args.db, args.cache)
    else:
        results = run(sorted(args.folder.glob("*.mp4")), args.db, args.cache, args.timeout)
        counts: dict[str, int] = {}
        for r_ in results:
            counts[r_["result"]] = counts.get(r_["result"], 0) + 1
        print(json.dumps(counts))
        if args.out:
            args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
