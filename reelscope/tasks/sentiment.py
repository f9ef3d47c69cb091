"""Sentiment of the words heard and read: SnowNLP for Chinese, VADER for English.

Each text unit (a transcript segment, an on-screen caption) is scored in its
own language on [-1, 1]; scores are averaged by text length per source, and the
overall value weighs the sources by their length.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from reelscope.report import Sentiment, SentimentSource
from reelscope.tasks.lang import language_of

NEUTRAL_BAND = 0.05


def label_of(score: float) -> str:
    if score > NEUTRAL_BAND:
        return "positive"
    if score < -NEUTRAL_BAND:
        return "negative"
    return "neutral"


@cache
def _vader() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def warm_up() -> None:
    """Load both analyzers (SnowNLP reads its model lazily, about 2 s)."""
    score_text("好", "zh")
    score_text("good", "en")


def score_text(text: str, language: str) -> float:
    if language == "zh":
        from snownlp import SnowNLP

        return 2.0 * float(SnowNLP(text).sentiments) - 1.0
    return float(_vader().polarity_scores(text)["compound"])


def analyze(sources: Iterable[tuple[str, Sequence[str]]]) -> Sentiment:
    """Score ``(source name, text units)`` pairs, e.g. ("transcript", segment texts)."""
    parts: list[SentimentSource] = []
    for source, units in sources:
        by_lang: dict[str, list[tuple[float, int]]] = {}
        for unit in units:
            unit = unit.strip()
            if unit:
                lang = language_of(unit)
                by_lang.setdefault(lang, []).append((score_text(unit, lang), len(unit)))
        for lang, scored in sorted(by_lang.items()):
            chars = sum(n for _, n in scored)
            score = sum(s * n for s, n in scored) / chars
            parts.append(SentimentSource(source, lang, label_of(score), score, chars))
    if not parts:
        return Sentiment()
    total = sum(p.chars for p in parts)
    overall = sum(p.score * p.chars for p in parts) / total
    return Sentiment(label=label_of(overall), score=overall, sources=tuple(parts))
