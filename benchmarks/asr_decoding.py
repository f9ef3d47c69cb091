"""One speech decoding rule for every device: greedy (reelscope's Whisper) against beam
search (faster-whisper, CTranslate2 int8, beam 5, the previous CPU path), on the same
model's weights and the same audio: word error rate and time, in one run.

    python benchmarks/asr_decoding.py [--out results.json]

Audio: the sample clip's speech, and the LibriVox readings of Debian's
pocketsphinx-testdata with their exact transcripts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe, stamp

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests")]

import phoneclips  # noqa: E402
from textmetrics import wer  # noqa: E402

from reelscope.tasks import asr  # noqa: E402
from reelscope.video.decode import decode_audio  # noqa: E402
from reelscope.video.media import Limits, probe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import torch
    from faster_whisper import WhisperModel

    torch.set_num_threads(args.threads)
    model_dir = asr.prepare_model_dir(Path(tempfile.mkdtemp(prefix="rs-asr-")))
    greedy = asr.SpeechRecognizer(model_dir)
    beam = WhisperModel(str(model_dir), device="cpu", compute_type="int8",
                        cpu_threads=args.threads)
    truth = json.loads((ROOT / "samples" / "sample.json").read_text())
    items = [("sample", decode_audio(probe(ROOT / "samples" / "sample.mp4",
                                           Limits(600, 8192, 4096))), truth["speech"])]
    items += [(f"librivox-{i}", s.astype(np.float32) / 32768, text)
              for i, (s, text) in enumerate(phoneclips.librivox())]
    result: dict[str, object] = {**stamp(), "threads": args.threads, "items": []}
    print(describe(result["machine"]))  # type: ignore[arg-type]
    for name, audio, text in items:
        row: dict[str, object] = {"audio": name, "seconds": round(len(audio) / 16000, 2),
                                  "reference": text}
        for label, transcribe in (
            ("greedy (reelscope, torch fp32)", lambda a: greedy.transcribe(a).text),
            ("beam 5 (faster-whisper, int8)", lambda a: " ".join(
                s.text.strip() for s in beam.transcribe(a, vad_filter=True, beam_size=5,
                                                        condition_on_previous_text=False)[0])),
        ):
            transcribe(audio)  # warm
            start = time.perf_counter()
            got = transcribe(audio)
            row[label] = {"wer": round(wer(text, got), 4), "s": round(time.perf_counter() - start,
                                                                      3), "text": got}
        result["items"].append(row)  # type: ignore[attr-defined]
        print(json.dumps(row, ensure_ascii=False), flush=True)
    for label in ("greedy (reelscope, torch fp32)", "beam 5 (faster-whisper, int8)"):
        rows = [r[label] for r in result["items"]]  # type: ignore[attr-defined]
        print(f"{label}: mean WER {np.mean([r['wer'] for r in rows]):.3f}, "
              f"{sum(r['s'] for r in rows):.2f} s")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
