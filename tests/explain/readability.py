"""Flesch reading ease of an English text, computed as textstat 0.7.3 computes it (MIT, Shivam Bansal):
words are what is left between blanks once punctuation is removed, syllables come from pyphen's en_US
hyphenation, and sentences of two words or fewer are not counted. The test of every English message
depends on this figure, so it is computed here rather than through textstat, whose 0.7.3 needs
setuptools' pkg_resources and whose later releases fetch an NLTK dictionary at run time."""

from __future__ import annotations

import math
import re

from pyphen import Pyphen  # type: ignore[import-untyped]

_HYPHENATION = Pyphen(lang="en_US")


def flesch_reading_ease(text: str) -> float:
    words = _word_count(text)
    sentences = re.findall(r"\b[^.!?]+[.!?]*", text)
    counted = max(1, len(sentences) - sum(_word_count(sentence) <= 2 for sentence in sentences))
    syllables = sum(len(_HYPHENATION.positions(word)) + 1 for word in _without_punctuation(text.lower()).split())
    words_per_sentence = _round(words / counted, 1)
    syllables_per_word = _round(syllables / words, 1) if words else 0.0
    return _round(206.835 - 1.015 * words_per_sentence - 84.6 * syllables_per_word, 2)


def _without_punctuation(text: str) -> str:
    return re.sub(r"[^\w\s]", "", text)


def _word_count(text: str) -> int:
    return len(_without_punctuation(text).split())


def _round(number: float, points: int) -> float:
    """Half away from zero, as textstat rounds."""
    scale: int = 10**points
    return math.floor(number * scale + math.copysign(0.5, number)) / scale
