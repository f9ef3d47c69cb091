"""Which of the two languages reelscope reads a piece of text is in."""

from __future__ import annotations

import re

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def language_of(text: str) -> str:
    """``zh`` when at least a fifth of the non-space characters are CJK, else ``en``."""
    cjk = len(_CJK.findall(text))
    return "zh" if cjk and cjk >= 0.2 * len(text.replace(" ", "")) else "en"
