"""Sentiment and language of what is said and shown, with the real text encoder (its
engine on the CPU) and the trained head: the labels a reader would give."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clipgen
import pytest

from reelscope.config import Settings
from reelscope.errors import ModelError
from reelscope.pipeline.runtime import Runtime
from reelscope.tasks import sentiment
from reelscope.tasks.lang import language_of
from reelscope.tasks.sentiment import Encode


@pytest.fixture(scope="module")
def encode(cache_dir: Path) -> Iterator[Encode]:
    with Runtime(Settings.from_env({}, cache_dir=str(cache_dir), device="cpu")) as rt:
        yield rt.text_encoder.encode


READ = [
    # Chinese
    ("这太糟糕了，我很难过", "negative"),
    ("这个手机不好用，电池一天就没电了", "negative"),
    ("质量太差了，再也不会买了", "negative"),
    ("今天上午九点，列车从北京西站出发。", "neutral"),
    ("这座大桥全长一千二百米，去年十月建成通车。", "neutral"),
    ("这家店的菜非常好吃，下次还来", "positive"),
    ("不错，物流很快，包装也很好", "positive"),
    # English
    ("This is the worst movie I have ever seen.", "negative"),
    ("The food was not good and the service was slow.", "negative"),
    ("The train leaves the station at nine in the morning.", "neutral"),
    ("The museum is on the north bank of the river.", "neutral"),
    ("Not bad at all, I really enjoyed it.", "positive"),
    ("What a wonderful day, we are very happy.", "positive"),
]


@pytest.mark.parametrize(("text", "label"), READ)
def test_a_sentence_gets_the_label_a_reader_gives(encode: Encode, text: str,
                                                  label: str) -> None:
    got = sentiment.analyze([("ocr", [text])], encode)
    assert (got.label, got.sources[0].label) == (label, label), got
    assert got.sources[0].language == language_of(text)
    if label == "positive":
        assert got.score > 0.2
    elif label == "negative":
        assert got.score < -0.2


@pytest.mark.parametrize(("text", "language"), [
    ("今天天气很好，我们去海边", "zh"),
    ("The train leaves the station at nine.", "en"),
    ("Me encanta esta canción, es maravillosa", "es"),
    ("今日はとても楽しかったです", "ja"),
    ("오늘 정말 좋았어요", "ko"),
    ("C'est vraiment nul, je suis déçu", "fr"),
    ("Das ist wirklich schlecht gemacht", "de"),
    ("今天天气很好 What a wonderful day", "zh"),  # a bilingual caption counts as Chinese
    ("12:30 ...", "und"),
])
def test_the_language_of_a_text(text: str, language: str) -> None:
    assert language_of(text) == language


@pytest.mark.parametrize("text", ["Me encanta esta canción, es maravillosa",
                                  "今日はとても楽しかったです", "오늘 정말 좋았어요",
                                  "C'est vraiment nul, je suis déçu"])
def test_an_unsupported_language_is_unknown_not_guessed(encode: Encode, text: str) -> None:
    got = sentiment.analyze([("transcript", [text])], encode)
    assert got.label == "unknown" and got.score == 0.0
    assert [(s.label, s.weight) for s in got.sources] == [("unknown", 0.0)]


def test_a_mixed_language_clip_has_a_part_per_source_and_language(encode: Encode) -> None:
    got = sentiment.analyze([
        ("transcript", ["Hello everyone, I am so happy today, this is wonderful.",
                        "Me encanta esta canción"]),
        ("ocr", ["我们非常开心"]),
    ], encode)
    parts = {(s.source, s.language): s for s in got.sources}
    assert set(parts) == {("transcript", "en"), ("transcript", "es"), ("ocr", "zh")}
    assert parts[("transcript", "es")].label == "unknown"
    assert parts[("transcript", "en")].label == parts[("ocr", "zh")].label == "positive"
    assert got.label == "positive"
    known = [s for s in got.sources if s.label != "unknown"]
    assert abs(sum(s.weight for s in known) - 1.0) < 1e-3
    en, zh = parts[("transcript", "en")], parts[("ocr", "zh")]
    assert en.weight / zh.weight == pytest.approx(en.chars / zh.chars, rel=1e-3)


def test_no_text_is_neutral_without_sources(encode: Encode) -> None:
    got = sentiment.analyze([("transcript", []), ("ocr", ["  "])], encode)
    assert (got.label, got.score, got.sources) == ("neutral", 0.0, ())


def test_a_damaged_head_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "sentiment_head.npz"
    bad.write_bytes(b"not a numpy archive")
    with pytest.raises(ModelError,
                       match=r"the sentiment head .*sentiment_head\.npz cannot be read"):
        sentiment.SentimentHead.load(bad)


@pytest.fixture(scope="module")
def sad_clip(clips: Path) -> Path:
    """Real photos, Chinese and English captions of a bad day, a disappointed voice."""
    from skimage import data

    spec = clipgen.ClipSpec(
        scenes=(
            clipgen.Scene(data.coffee(), 4.0, ("咖啡太难喝了", "The coffee was awful")),
            clipgen.Scene(data.rocket(), 4.0, ("这太糟糕了，我很难过", "I feel terrible")),
        ),
        speech="This was a terrible day. I am so disappointed and sad.",
    )
    return clipgen.write_clip(clips / "sad.mp4", spec)


@pytest.mark.parametrize(("clip", "label"), [("sad_clip", "negative"),
                                             ("different_clip", "neutral")])
def test_a_clips_sentiment_is_what_a_viewer_would_say(
        request: pytest.FixtureRequest, run_cli: Any, tmp_path: Path, clip: str,
        label: str) -> None:
    """The sad clip is negative; the other (night sky, cells under glass, a weather
    forecast read out) is factual: neutral (the lexicons before the head called factual
    clips positive)."""
    result = run_cli("analyze", str(request.getfixturevalue(clip)), "--json",
                     db=tmp_path / "db.sqlite")
    assert result.code == 0, result.stderr
    feeling = result.json()["sentiment"]
    assert feeling["label"] == label, feeling
    parts = {(p["source"], p["language"]): p for p in feeling["sources"]}
    said = {("transcript", "en"), ("ocr", "zh"), ("ocr", "en")}
    assert said <= set(parts), parts
    assert {parts[k]["label"] for k in said} == {label}, parts
    # anything else read (a stray mark on a photo) is in no language: unknown, no weight
    assert all(p["label"] == "unknown" and p["weight"] == 0 for k, p in parts.items()
               if k not in said), parts
    assert sum(parts[k]["weight"] for k in said) == pytest.approx(1.0, abs=1e-3)


def test_the_head_shipped_is_the_one_benchmarks_md_measured() -> None:
    """Retraining the head means measuring it again: the newest results file names the
    head file it scored by its sha256."""
    import hashlib
    import json

    newest = sorted(Path(__file__).resolve().parent.parent.glob(
        "benchmarks/results-sentiment-*.json"))[-1]
    measured = json.loads(newest.read_text(encoding="utf-8"))["head_file_sha256"]
    assert hashlib.sha256(sentiment.HEAD_FILE.read_bytes()).hexdigest() == measured
