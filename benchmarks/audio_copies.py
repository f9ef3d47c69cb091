"""Music reused under speech or alone, re-encoded: found by reelscope's audio landmarks
against the Chromaprint matching it used before (issue: copy detection that survives real
edits).

    .venv/bin/python benchmarks/audio_copies.py --out results.json     # ~2 min

References: 60 s (from 10 s in) of each of 8 pieces of Debian's ``hyperrogue-music``.
Copies, 3 per reference: an 8 s excerpt from a random point, alone, and under a LibriVox
reading (``pocketsphinx-testdata``) with the music 6 dB and 12 dB below the voice; every
copy encoded again as AAC at 64 kbit/s. Unrelated queries: 8 s of 5 other pieces, alone
and under the voice, and the voice alone, 3 times. Every (query, reference) pair is
scored with both methods, as ``reelscope.tasks.copyright`` does:
``match_audio`` (Chromaprint) and ``landmarks.match`` (on the hits a database lookup by
hash returns). Reported: copies found at reelscope's default threshold (score 0.6), their
reference offset within 0.5 s, and unrelated pairs over the threshold, with the highest
unrelated score.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "benchmarks")]

import copyedits as ce  # noqa: E402
from machine import stamp  # noqa: E402

from reelscope.tasks import landmarks  # noqa: E402
from reelscope.tasks.copyright import match_audio  # noqa: E402
from reelscope.tasks.fingerprint import Fingerprint, audio_fingerprint  # noqa: E402

THRESHOLD = 0.6
# the pieces at least 72 s long; the others are unrelated music
REFERENCES = ("hr-domina-mountain", "hr3-desert", "hr3-graveyard", "hr3-hell", "hr3-icyland",
              "hr3-jungle", "hr3-laboratory", "hr3-mirror")
OTHERS = ("hr-domina-hunting", "hr3-caves", "hr3-crossroads", "hr3-motion", "hr3-rlyeh")
KINDS = {"alone": None, "under speech -6 dB": -6.0, "under speech -12 dB": -12.0}


def reencoded(samples: np.ndarray, kbps: int = 64) -> np.ndarray:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        ce.mux_audio(out, ce.aac_stream(out, kbps), samples)
    buf.seek(0)
    return ce.read_audio(buf)


def queries(rng: random.Random) -> list[dict[str, Any]]:
    voice = ce.speech(24.0)
    out: list[dict[str, Any]] = []
    for name in REFERENCES:
        for kind, db in KINDS.items():
            start = rng.uniform(0.0, 50.0)
            music = ce.read_audio(ce.music_path(name), 10.0 + start, 8.0)
            if db is not None:
                at = rng.uniform(0.0, 16.0)
                music = ce.under(music, voice[round(at * ce.AUDIO_RATE):], db)
            out.append({"query": f"{name} {kind}", "reference": name, "kind": kind,
                        "reference_start_s": round(start, 2), "audio": reencoded(music)})
    for name in OTHERS:
        music = ce.read_audio(ce.music_path(name), 20.0, 8.0)
        out.append({"query": f"{name} alone", "reference": None, "audio": reencoded(music)})
        out.append({"query": f"{name} under speech", "reference": None,
                    "audio": reencoded(ce.under(music, voice[: 8 * ce.AUDIO_RATE], -6.0))})
    for i in range(3):
        at = rng.uniform(0.0, 16.0)
        part = voice[round(at * ce.AUDIO_RATE):round((at + 8) * ce.AUDIO_RATE)]
        out.append({"query": f"speech {i}", "reference": None, "audio": reencoded(part)})
    return out


def chromaprint(samples: np.ndarray) -> Fingerprint:
    items, item_s = audio_fingerprint(samples)
    return Fingerprint(0.5, np.zeros((0, 32), np.uint8), np.zeros(0, np.uint8), items, item_s)


def run(out: Path, seed: int) -> None:
    refs = {name: ce.read_audio(ce.music_path(name), 10.0, 60.0) for name in REFERENCES}
    qs = queries(random.Random(seed))
    methods: dict[str, Any] = {}
    for method in ("chromaprint (before)", "landmarks (reelscope now)"):
        start = time.perf_counter()
        if method.startswith("chromaprint"):
            ref_fp = {n: chromaprint(a) for n, a in refs.items()}
            q_fp = [chromaprint(q["audio"]) for q in qs]

            def score(i: int, name: str) -> Any:
                return match_audio(q_fp[i], ref_fp[name])  # noqa: B023
        else:
            ref_lm = {n: landmarks.landmarks(a) for n, a in refs.items()}
            q_lm = [landmarks.landmarks(q["audio"]) for q in qs]

            def score(i: int, name: str) -> Any:
                shared = set(q_lm[i].hashes.tolist())  # noqa: B023
                r = ref_lm[name]  # noqa: B023
                hits = [(h, t) for h, t in zip(r.hashes.tolist(), r.frames.tolist(),
                                               strict=True) if h in shared]
                return landmarks.match(q_lm[i], hits, r.length)  # noqa: B023
        describe_s = time.perf_counter() - start
        per_kind: dict[str, dict[str, int]] = {}
        unrelated: list[tuple[str, str, float]] = []
        for i, q in enumerate(qs):
            for name in REFERENCES:
                found = score(i, name)
                if name != q["reference"]:
                    unrelated.append((q["query"], name, found.score))
                    continue
                row = per_kind.setdefault(q["kind"], {"found": 0, "offset_within_0_5s": 0,
                                                      "of": 0})
                row["of"] += 1
                if found.score >= THRESHOLD:
                    row["found"] += 1
                    offset = found.reference_start_s - found.query_start_s
                    row["offset_within_0_5s"] += abs(offset - q["reference_start_s"]) <= 0.5
        worst = max(unrelated, key=lambda u: u[2])
        methods[method] = {
            "per_kind": per_kind,
            "found": sum(r["found"] for r in per_kind.values()),
            "copies": sum(r["of"] for r in per_kind.values()),
            "unrelated_pairs_over_threshold": sum(u[2] >= THRESHOLD for u in unrelated),
            "unrelated_pairs": len(unrelated),
            "highest_unrelated": {"query": worst[0], "reference": worst[1],
                                  "score": round(worst[2], 3)},
            "fingerprint_s": round(describe_s, 2)}
        print(method, json.dumps(methods[method]), flush=True)
    out.write_text(json.dumps({**stamp(), "threshold": THRESHOLD, "seed": seed,
                               "references": list(REFERENCES), "methods": methods}, indent=1))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    run(args.out, args.seed)


if __name__ == "__main__":
    main()
