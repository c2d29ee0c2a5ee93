"""Book texts for memorization: the ``alice29`` and ``alice-pg11`` datasets, or any text file.

``load_text("alice")`` (alias of ``alice29``) is the Canterbury-corpus ``alice29.txt``
(Millennium Fulcrum Edition 2.9), shipped in the brotli 1.1.0 source distribution on PyPI;
``alice-pg11`` is Project Gutenberg #11 (edition 3.0). Both come into the cache with
``workbench data fetch NAME`` (cards ``datasets/alice29.md``, ``datasets/alice-pg11.md``); any
other value is a path to a UTF-8 text.

Books are cut to their story (from the first sentence of chapter I to ``THE END`` when found) and
whitespace is normalised: lines of a paragraph are joined with one space, paragraphs are
separated by one blank line. A name always means the same text on every machine.

>>> normalize_book("Title\\r\\n\\r\\n  Alice was beginning to get very tired\\r\\nof  it.\\r\\n\\r\\nTHE END")
'Alice was beginning to get very tired of it.'
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from .registry import dataset_path, get, is_name

STORY_START = "Alice was beginning to get very tired"
STORY_END = "THE END"
NAMED = ("alice", "alice29", "alice-pg11")


def normalize_book(raw: str, start: str = STORY_START, end: str = STORY_END) -> str:
    """The story between ``start`` (kept) and ``end`` (dropped), whitespace-normalised.

    Text without ``start`` is kept from its beginning; without ``end``, to its end.
    """
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    at = text.find(start)
    text = text[at:] if at >= 0 else text
    stop = text.rfind(end)
    text = text[:stop] if stop > 0 else text
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paragraphs if p)


def alice_path(name: str = "alice29") -> Path:
    """The cached file of a named Alice text; a missing one raises an error naming the fetch command.

    >>> alice_path().name                                          # doctest: +SKIP
    'alice29.txt'
    """
    entry = get(name)
    return dataset_path(entry.name) / entry.files[0].name


def resolve_text_path(source: str | os.PathLike) -> Path:
    """A text name (`NAMED`) or a file path -> an existing file; errors name the fix."""
    if str(source) in NAMED and is_name(str(source)) and not Path(source).is_file():
        return alice_path(str(source))
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"text {str(source)!r}: no such file; give a path to a UTF-8 text file "
                                f"or one of the named texts {list(NAMED)}")
    return path


def load_text(source: str | os.PathLike = "alice") -> str:
    """The normalised story text of a named text or file.

    >>> load_text("alice-pg11")[:37]                               # doctest: +SKIP
    'Alice was beginning to get very tired'
    """
    path = resolve_text_path(source)
    return normalize_book(path.read_text(encoding="utf-8", errors="replace"))


def text_fingerprint(text: str) -> str:
    """Short sha256 of a text (saved with each run so results name the exact text)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]
