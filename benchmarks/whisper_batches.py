"""Whisper's 30 s windows of several videos: one after another, on a thread each at once,
and as one batch (what the GPU's speech workers do, ``reelscope.tasks.asr.WindowBatches``),
on one device, in one run: the time of each way and whether each window's tokens are the
ones it gets alone.

    python benchmarks/whisper_batches.py [--device cpu|cuda:0] [--videos 4] [--repeat 3]
        [--busy] [--out results.json]

``--busy`` (a GPU): the batch again while other work keeps the GPU partly busy, the way
the analysis's picture models do, from a thread of this process and then from another
process (which has a CUDA context of its own: the GPU time-slices between contexts).

Audio: the sample clip's speech and the LibriVox readings of Debian's
pocketsphinx-testdata, or the speech of the videos given by ``--clip`` (the GPU machine
has no Debian packages: the realistic clip's speech is a LibriVox reading); a window each
(the first 30 s of its speech, as the recognizer cuts it). On the CPU torch gets
``--threads`` threads (the speech lane's share). Whisper's joined weights come from
``REELSCOPE_CACHE_DIR`` where set (the GPU machine's staged cache).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from machine import describe, stamp

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts")]

import phoneclips  # noqa: E402

from reelscope.tasks import asr  # noqa: E402
from reelscope.tasks.whisper import N_FRAMES  # noqa: E402
from reelscope.video.decode import decode_audio  # noqa: E402
from reelscope.video.media import Limits, probe  # noqa: E402


def windows(recognizer: asr.SpeechRecognizer, count: int, clips: list[Path]) -> np.ndarray:
    limits = Limits(600, 8192, 4096)
    audios = [decode_audio(probe(ROOT / "samples" / "sample.mp4", limits))]
    if clips:
        audios += [decode_audio(probe(clip, limits)) for clip in clips]
    else:
        audios += [s.astype(np.float32) / 32768 for s, _ in phoneclips.librivox()]
    out = []
    for audio in (audios * count)[:count]:
        prepared = recognizer.speech_mel(audio)
        assert prepared is not None
        mel = prepared[0][:, :N_FRAMES]
        out.append(np.pad(mel, ((0, 0), (0, N_FRAMES - mel.shape[1]))))
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clip", type=Path, action="append", default=[],
                    help="a video whose speech to use instead of the LibriVox readings")
    ap.add_argument("--busy", action="store_true",
                    help="the batch again beside other GPU work: a thread, a process")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    cache = os.environ.get("REELSCOPE_CACHE_DIR") or tempfile.mkdtemp(prefix="rs-whisper-")
    model_dir = asr.prepare_model_dir(Path(cache))
    recognizer = asr.SpeechRecognizer(model_dir, args.device, "fp16" if cuda else "fp32")
    mels = windows(recognizer, args.videos, args.clip)

    def decode(batch: np.ndarray) -> list[tuple[str, list[int]]]:
        got = recognizer._decode(batch, [""] * len(batch))
        if cuda:
            torch.cuda.synchronize()
        return got

    def one_by_one() -> list[tuple[str, list[int]]]:
        return [decode(m[None])[0] for m in mels]

    def threads() -> list[tuple[str, list[int]]]:
        got: list[tuple[str, list[int]]] = [("", [])] * len(mels)

        def run(i: int) -> None:
            got[i] = decode(mels[i][None])[0]

        each = [threading.Thread(target=run, args=(i,)) for i in range(len(mels))]
        for t in each:
            t.start()
        for t in each:
            t.join()
        return got

    def batch() -> list[tuple[str, list[int]]]:
        return decode(mels)

    alone = one_by_one()  # also the warm-up
    head = stamp()
    result: dict[str, object] = {**head, "device": args.device, "videos": args.videos,
                                 "threads": args.threads,
                                 "tokens": [len(t) for _, t in alone]}
    ways: dict[str, Callable[[], list[tuple[str, list[int]]]]] = {
        "one_by_one": one_by_one, "a_thread_each": threads, "one_batch": batch}
    for name, way in ways.items():
        times, same = [], True
        for _ in range(args.repeat):
            start = time.perf_counter()
            got = way()
            times.append(round(time.perf_counter() - start, 3))
            same = same and got == alone
        result[name] = {"median_s": statistics.median(times), "times_s": times,
                        "same_tokens_as_alone": same}
        print(name, result[name], flush=True)
    if args.busy and cuda:
        result["one_batch_beside"] = beside(batch, alone, args.device, args.repeat)
    print(describe(head["machine"]))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


def busy_loop(device: str, stop: Any) -> None:
    """Small convolution batches with a copy back to the host after each and a pause
    between them: work of the picture models' kind (how closely it matches their load
    is not measured)."""
    import torch

    net = torch.nn.Sequential(*(torch.nn.Conv2d(32, 32, 3, padding=1) for _ in range(8)))
    net = net.to(device).half().eval()
    x = torch.randn(8, 32, 128, 128, device=device, dtype=torch.half)
    with torch.inference_mode():
        while not stop.is_set():
            net(x).float().mean().item()
            time.sleep(0.002)


def beside(batch: Callable[[], list[tuple[str, list[int]]]],
           alone: list[tuple[str, list[int]]], device: str, repeat: int
           ) -> dict[str, object]:
    """The batch's times beside :func:`busy_loop` in a thread, then in another process."""
    import multiprocessing

    out: dict[str, object] = {}
    for where in ("thread", "process"):
        if where == "thread":
            stop: Any = threading.Event()
            worker: Any = threading.Thread(target=busy_loop, args=(device, stop))
        else:
            ctx = multiprocessing.get_context("spawn")
            stop = ctx.Event()
            worker = ctx.Process(target=busy_loop, args=(device, stop))
        worker.start()
        time.sleep(5.0)  # started, its CUDA context made
        times, same = [], True
        for _ in range(repeat):
            start = time.perf_counter()
            got = batch()
            times.append(round(time.perf_counter() - start, 3))
            same = same and got == alone
        stop.set()
        worker.join()
        out[where] = {"median_s": statistics.median(times), "times_s": times,
                      "same_tokens_as_alone": same}
        print("one_batch beside a busy", where, out[where], flush=True)
    return out


if __name__ == "__main__":
    main()
