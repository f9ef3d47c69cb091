"""Where one process's CPU goes while it works: CPU seconds per thread (from /proc, every
thread of the process, named by Python's ``threading`` where it started it), the CPU of
its child processes (those alive at the end, such as worker processes), the Python
functions its threads were in (sampled), and how late a thread that asks for Python's
lock gets it back.

    with ThreadProfile() as prof:
        work()
    json.dumps(prof.result())

Linux only (it reads /proc). The sampler and the lock probe take the interpreter's lock
themselves, a few percent of one core: a profiled run is not a timed one.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

TICK_S = 1 / os.sysconf("SC_CLK_TCK")
WAITING = ("threading.py", "queue.py", "selectors.py", "concurrent/futures/_base.py",
           "concurrent/futures/thread.py", "multiprocessing/connection.py",
           "multiprocessing/queues.py")
OURS = ("reelscope/", "rapidocr/", "benchmarks/")


def _fields(stat: str) -> list[str]:
    """A /proc stat line's fields after the command's closing paren (state, ppid, ...)."""
    return stat[stat.rindex(")") + 2:].split()


def _ticks(stat: str) -> int:
    """utime + stime of a /proc stat line."""
    rest = _fields(stat)
    return int(rest[11]) + int(rest[12])


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # the thread or process ended meanwhile
        return ""


def _group(name: str) -> str:
    """A thread's name without its pool's numbers: "ocr_3" -> "ocr", "batcher-x-1" ->
    "batcher-x", "ThreadPoolExecutor-4_0" -> "ThreadPoolExecutor"."""
    return re.sub(r"([-_]\d+)+$", "", name) or name


def _where(filename: str, name: str) -> str:
    parts = Path(filename).parts
    return f"{'/'.join(parts[-2:])}:{name}"


class ThreadProfile:
    def __init__(self, period_s: float = 0.01, probe_s: float = 0.001) -> None:
        self.period_s = period_s
        self.probe_s = probe_s
        self._names: dict[int, str] = {}  # native thread id -> Python's name, or its comm
        self._cpu: dict[int, int] = {}  # native thread id -> the most ticks seen
        self._start_cpu: dict[int, int] = {}
        self._children: dict[int, tuple[str, int, int]] = {}  # pid -> (comm, first, last)
        self.inner: Counter[tuple[str, str]] = Counter()  # (thread group, innermost frame)
        self.ours: Counter[tuple[str, str]] = Counter()  # (group, innermost frame of ours)
        self.lateness_s: list[float] = []
        self.samples = 0
        self._stop = threading.Event()

    # /proc --------------------------------------------------------------------------

    def _scan(self, children: bool = False) -> None:
        """Every thread's ticks so far (kept at their highest: a thread that ended keeps
        what it had when last seen), and with ``children`` the child processes'."""
        python = {t.native_id: t.name for t in threading.enumerate() if t.native_id}
        for task in Path("/proc/self/task").iterdir():
            tid = int(task.name)
            stat = _read(task / "stat")
            if not stat:
                continue
            if tid not in self._names:
                self._names[tid] = python.get(tid) or _read(task / "comm").strip()
            elif tid in python:
                self._names[tid] = python[tid]
            self._cpu[tid] = max(self._cpu.get(tid, 0), _ticks(stat))
        if not children:
            return
        me = str(os.getpid())
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            stat = _read(proc / "stat")
            if not stat or _fields(stat)[1] != me:
                continue
            pid, ticks = int(proc.name), _ticks(stat)
            comm, first, _ = self._children.get(pid, (_read(proc / "comm").strip(), ticks, 0))
            self._children[pid] = (comm, first, ticks)

    # sampling -----------------------------------------------------------------------

    def _sample(self) -> None:
        me = threading.get_ident()
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            if ident == me or names.get(ident, "").startswith("threadprof"):
                continue
            group = _group(names.get(ident, "?"))
            code = frame.f_code
            where = _where(code.co_filename, code.co_name)
            if any(code.co_filename.endswith(w) for w in WAITING):
                where = "(waiting: " + where + ")"
            self.inner[(group, where)] += 1
            f: Any = frame
            while f is not None and not any(o in f.f_code.co_filename for o in OURS):
                f = f.f_back
            if f is not None:
                self.ours[(group, _where(f.f_code.co_filename, f.f_code.co_name)
                           + (" (waiting)" if where.startswith("(waiting") else ""))] += 1
        self.samples += 1

    def _sampler(self) -> None:
        last_scan = 0.0
        while not self._stop.wait(self.period_s):
            self._sample()
            if time.monotonic() - last_scan > 0.5:
                self._scan()
                last_scan = time.monotonic()

    def _probe(self) -> None:
        """Sleep ``probe_s`` again and again: how much later than asked it wakes is how
        long it waited for Python's lock (and for a core)."""
        while not self._stop.is_set():
            t = time.perf_counter()
            time.sleep(self.probe_s)
            self.lateness_s.append(time.perf_counter() - t - self.probe_s)

    # lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> ThreadProfile:
        self._scan(children=True)
        self._start_cpu = dict(self._cpu)
        self._start_children = {pid: last for pid, (_, _, last) in self._children.items()}
        self._proc0 = _ticks(_read(Path("/proc/self/stat")))
        self._wall = time.perf_counter()
        self._threads = [threading.Thread(target=t, daemon=True, name=f"threadprof-{i}")
                         for i, t in enumerate((self._sampler, self._probe))]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._scan(children=True)
        self.wall_s = time.perf_counter() - self._wall
        self.process_cpu_s = (_ticks(_read(Path("/proc/self/stat"))) - self._proc0) * TICK_S

    def result(self, top: int = 40) -> dict[str, Any]:
        threads: Counter[str] = Counter()
        for tid, ticks in self._cpu.items():
            threads[_group(self._names.get(tid, "?"))] += (ticks - self._start_cpu.get(tid, 0))
        children: Counter[str] = Counter()
        for pid, (comm, first, last) in self._children.items():
            children[comm] += last - self._start_children.get(pid, first)
        late = sorted(self.lateness_s) or [0.0]

        def pct(q: float) -> float:
            return round(1000 * late[int(q * (len(late) - 1))], 3)

        def shares(counter: Counter[tuple[str, str]]) -> list[list[Any]]:
            total = max(1, self.samples)
            return [[g, w, round(n / total, 3)] for (g, w), n in counter.most_common(top)]

        return {
            "wall_s": round(self.wall_s, 2),
            "process_cpu_s": round(self.process_cpu_s, 2),
            "threads_cpu_s": {k: round(v * TICK_S, 2) for k, v in threads.most_common()
                              if v},
            "children_cpu_s": {k: round(v * TICK_S, 2) for k, v in children.most_common()
                               if v},
            "lock_wait_ms": {"mean": round(1000 * statistics.mean(late), 3), "p50": pct(0.5),
                             "p90": pct(0.9), "p99": pct(0.99), "probes": len(late)},
            "samples": self.samples,
            # the share of samples (of the wall time) that a thread group spent in a place:
            # its innermost Python frame, and the innermost frame of reelscope's own code
            "innermost": shares(self.inner),
            "in_our_code": shares(self.ours),
        }
