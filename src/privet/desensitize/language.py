"""Per-document language detection: English or Chinese, by script.

privet's recognizers are split by script rather than by fine-grained language, so the decision is
whether a document is written mainly in Han characters. A document counts as Chinese when at least
a fifth of its letters are CJK ideographs; digits, punctuation and Latin words (e-mail addresses,
product names) inside Chinese text do not change that.
"""

from __future__ import annotations

import re

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")

LANGUAGES = ("en", "zh")


def detect_language(text: str) -> str:
    """``"zh"`` when Han characters make up at least 20% of the letters, else ``"en"``."""
    cjk = len(_CJK.findall(text))
    if cjk == 0:
        return "en"
    latin = len(_LATIN.findall(text))
    return "zh" if cjk * 5 >= cjk + latin else "en"
