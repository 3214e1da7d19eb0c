"""Showing a caller what they sent, inertly: in an error message, a page or a log line, their text
can neither run as markup nor hide what it is (a look-alike letter, a right-to-left override).
"""

from __future__ import annotations

import json
import re
import unicodedata

ECHO_LIMIT = 64
_PLAIN = re.compile(r"[A-Za-z0-9_.-]+")
_MARKUP = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}
# Control, format (bidi overrides, zero-width), surrogate, private-use and unassigned characters,
# and line and paragraph separators: they change how text displays without showing themselves.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def echo(text: str) -> str:
    """A name the caller sent, as it appears in a message: as is when plain ASCII (`gambling`), else
    quoted with every other character escaped (`"g\\u0430mbling"`, `"gambling "`), cut to a readable
    length. Markup is left to the output to escape (`inert` for JSON, Jinja2 for the page)."""
    if len(text) <= ECHO_LIMIT and _PLAIN.fullmatch(text):
        return text
    cut = text[:ECHO_LIMIT]
    quoted = json.dumps(cut)  # ASCII only: every other character as \\uXXXX
    return quoted if cut == text else f'{quoted[:-1]}..." ({len(text)} characters)'


def inert(text: str) -> str:
    """Text that may hold something a caller sent, with markup and invisible characters escaped
    (as \\uXXXX); everything else, Korean included, stays as it is."""
    if text.isascii() and text.isprintable() and not any(char in _MARKUP for char in text):
        return text
    return "".join(_escaped(char) for char in text)


def _escaped(char: str) -> str:
    if char in _MARKUP:
        return _MARKUP[char]
    if unicodedata.category(char) not in _INVISIBLE:
        return char
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
