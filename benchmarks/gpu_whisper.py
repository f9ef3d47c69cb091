"""Whisper's decoder alone on the GPU (reelscope.tasks.whisper, the package's CTranslate2
weights): the same tokens as on the CPU, and how fast.

Here (CPU):
    .venv/bin/python benchmarks/gpu_whisper.py prepare .gpu-whisper
writes the sample clip's speech as log-mel windows (faster-whisper's VAD and features),
the tokens the CPU decodes (fp32, greedy), the special token ids, and model.bin in 3 parts
of < 64 MiB (one per device call).

On the GPU machine (torch only; no PyAV, faster-whisper or tokenizers needed):
    python benchmarks/gpu_whisper.py run --parts DIR [DIR...] --inputs .gpu-whisper/inputs
joins the parts (checking the sha256), decodes every window in fp32 and fp16 on the GPU,
compares the tokens with the CPU's, and times encoder, decoder and whole clip (batch 1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import stamp  # noqa: E402

from reelscope.tasks.whisper import (  # noqa: E402
    DTYPES,
    N_FRAMES,
    GreedyDecoder,
    WhisperModel,
    WhisperTokens,
    read_ct2,
)

PART_BYTES = 55 * 1024 * 1024


def prepare(out: Path) -> None:
    import torch

    from reelscope.tasks.asr import SpeechRecognizer, prepare_model_dir
    from reelscope.video.decode import decode_audio
    from reelscope.video.media import Limits, probe

    model_dir = prepare_model_dir(Path(os.environ.get("REELSCOPE_CACHE_DIR", "/tmp/rs-cache")))
    audio = decode_audio(probe(ROOT / "samples" / "sample.mp4", Limits(180, 4096, 512)))
    rec = SpeechRecognizer(model_dir)
    cpu_text = rec.transcribe(audio).text
    prepared = rec.speech_mel(audio)
    if prepared is None:
        raise SystemExit("no speech in the sample?")
    mel, _ = prepared
    windows, tokens = [], []
    with torch.inference_mode():
        for seek in range(0, mel.shape[1], N_FRAMES):
            w = mel[:, seek : seek + N_FRAMES]
            w = np.pad(w, ((0, 0), (0, N_FRAMES - w.shape[1])))
            memories = rec.decoder.encode(w[None])
            tokens.append(rec.decoder.tokens(memories, rec.decoder.languages(memories))[0])
            windows.append(w.astype(np.float32))
    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    np.save(inputs / "mel.npy", np.stack(windows))
    blob = (model_dir / "model.bin").read_bytes()
    (inputs / "expected.json").write_text(json.dumps({
        "cpu_text": cpu_text,
        "cpu_tokens_torch_fp32": tokens,
        "tokens": rec.decoder.tok.to_dict(),
        "model_sha256": hashlib.sha256(blob).hexdigest(),
    }, ensure_ascii=False))
    for i in range(0, len(blob), PART_BYTES):
        part = out / f"part{i // PART_BYTES}"
        part.mkdir(exist_ok=True)
        (part / "model.bin.part").write_bytes(blob[i : i + PART_BYTES])
    print(f"prepared {out}: {len(windows)} windows, {len(blob) / 1e6:.0f} MB of weights")


def run(parts: list[Path], inputs: Path, out: Path) -> None:
    import torch

    expected = json.loads((inputs / "expected.json").read_text())
    model_bin = Path("/tmp/whisper-model.bin")
    with model_bin.open("wb") as f:
        for part in parts:
            with (part / "model.bin.part").open("rb") as src:
                shutil.copyfileobj(src, f)
    digest = hashlib.sha256(model_bin.read_bytes()).hexdigest()
    if digest != expected["model_sha256"]:
        raise SystemExit(f"joined model.bin sha256 {digest} != {expected['model_sha256']}")
    mel = np.load(inputs / "mel.npy")
    tokens = WhisperTokens.from_dict(expected["tokens"])
    device = torch.device("cuda")
    result: dict[str, object] = {
        **stamp(),
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "expected_text": expected["cpu_text"],
        "windows": len(mel),
    }
    for dtype in ("fp32", "fp16"):
        start = time.perf_counter()
        weights = read_ct2(model_bin)
        model = WhisperModel(weights).to(device, DTYPES[dtype]).eval()
        torch.cuda.synchronize()
        load_s = time.perf_counter() - start
        dec = GreedyDecoder(model, tokens, device, DTYPES[dtype])

        def clip(dec: GreedyDecoder = dec) -> list[list[int]]:
            got = []
            for w in mel:
                memories = dec.encode(w[None])
                got.append(dec.tokens(memories, dec.languages(memories))[0])
            torch.cuda.synchronize()
            return got

        def encoder(dec: GreedyDecoder = dec) -> None:
            for w in mel:
                dec.encode(w[None])
            torch.cuda.synchronize()

        with torch.inference_mode():
            got = clip()
            clip()
            times, enc_times = [], []
            for _ in range(10):
                t = time.perf_counter()
                clip()
                times.append(time.perf_counter() - t)
                t = time.perf_counter()
                encoder()
                enc_times.append(time.perf_counter() - t)
        n_tokens = sum(len(g) for g in got)
        clip_s = statistics.median(times)
        enc_s = statistics.median(enc_times)
        result[dtype] = {
            "tokens_equal_cpu_fp32": got == expected["cpu_tokens_torch_fp32"],
            "generated_tokens": n_tokens,
            "load_s": round(load_s, 2),
            "clip_s_median": round(clip_s, 4),
            "encoder_s_median": round(enc_s, 4),
            # decoder steps: language, prompt, each generated token and the end
            "ms_per_decoder_step": round(1000 * (clip_s - enc_s) / (n_tokens + 3), 2),
        }
        print(dtype, result[dtype], flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results-gpu-whisper.json").write_text(json.dumps(result, indent=2,
                                                             ensure_ascii=False))
    print(json.dumps(result, indent=2, ensure_ascii=False))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("out", type=Path)
    r = sub.add_parser("run")
    r.add_argument("--parts", type=Path, nargs="+", required=True)
    r.add_argument("--inputs", type=Path, required=True)
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = ap.parse_args()
    if args.mode == "prepare":
        prepare(args.out)
    else:
        run(args.parts, args.inputs, args.out)


if __name__ == "__main__":
    main()
