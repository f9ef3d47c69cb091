"""Regenerate the committed sample clip ``samples/sample.mp4`` and its ground truth.

    python scripts/make_sample.py            # writes samples/sample.mp4 + sample.json

Real photos from scikit-image's data set, bilingual burned-in captions drawn with
a CJK font, and English speech from espeak-ng. The JSON beside the clip is the
ground truth the tests check against.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clipgen import ClipSpec, Scene, total_duration, write_clip

SPEECH = (
    "Hello everyone. This is my cat. Every morning I make a cup of coffee. "
    "Today is a wonderful day, and I am very happy."
)

SCENES = (
    Scene(data.chelsea(), 3.0, ("这是我的猫", "This is my cat")),
    Scene(data.coffee(), 3.0, ("早上喝一杯咖啡", "Morning coffee")),
    Scene(data.astronaut(), 3.0, ("今天天气很好", "What a wonderful day")),
    Scene(data.rocket(), 3.0, ("我们非常开心", "We are very happy")),
)

SPEC = ClipSpec(scenes=SCENES, speech=SPEECH)

# A 15 s variant for benchmarks (`--long`): one more scene and sentence.
LONG_SPEC = ClipSpec(
    scenes=(*SCENES, Scene(data.chelsea()[:, ::-1], 3.0, ("明天见", "See you tomorrow"))),
    speech=SPEECH + " See you all tomorrow.",
)


def ground_truth() -> dict[str, object]:
    captions = []
    t = 0.0
    for scene in SCENES:
        for line in scene.captions:
            captions.append({"text": line, "start_s": t, "end_s": t + scene.duration_s})
        t += scene.duration_s
    return {
        "duration_s": total_duration(SPEC),
        "width": SPEC.width,
        "height": SPEC.height,
        "fps": SPEC.fps,
        "captions": captions,
        "speech": SPEECH,
        "speech_language": "en",
        "sentiment": "positive",
        "labels": [
            {"start_s": 0.0, "end_s": 3.0, "any_of": ["tabby", "tiger cat", "Egyptian cat"]}
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="regenerate the sample clip")
    parser.add_argument("--long", type=Path, metavar="PATH",
                        help="write only the 15 s benchmark variant to PATH")
    parser.add_argument("--size", default="720x1280", metavar="WxH",
                        help="frame size of the --long variant (1080x1920 for the GPU benchmark)")
    parser.add_argument("--crf", type=int, default=30, help="x264 quality of the --long variant")
    args = parser.parse_args()
    if args.long:
        width, height = (int(v) for v in args.size.lower().split("x"))
        spec = dataclasses.replace(LONG_SPEC, width=width, height=height, crf=args.crf)
        clip = write_clip(args.long, spec)
        print(f"wrote {clip} ({clip.stat().st_size / 1e6:.2f} MB, {total_duration(spec)} s, "
              f"{width}x{height})")
        return
    out_dir = Path(__file__).resolve().parent.parent / "samples"
    out_dir.mkdir(exist_ok=True)
    clip = write_clip(out_dir / "sample.mp4", SPEC)
    (out_dir / "sample.json").write_text(
        json.dumps(ground_truth(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    print(f"wrote {clip} ({clip.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
