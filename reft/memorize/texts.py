"""Text sources for memorization: any file, or *Alice's Adventures in Wonderland* from PyPI.

``load_text("alice")`` is the Canterbury-corpus ``alice29.txt`` (Millennium Fulcrum Edition 2.9)
shipped inside the brotli source distribution on PyPI: a package registry, never a model hub. It
is downloaded once with pip and only that file is extracted into the workbench cache
(``$WORKBENCH_CACHE/texts/alice29.txt``), never into the repository. Any other value is a path
(e.g. ``../shared/data/alice/alice_pg11.txt``, the Gutenberg #11 edition 3.0).

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
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from workbench.models import cache_dir

BROTLI_VERSION = "1.1.0"                       # sdist Brotli-1.1.0.tar.gz holds tests/testdata/alice29.txt
ALICE_MEMBER = f"Brotli-{BROTLI_VERSION}/tests/testdata/alice29.txt"
ALICE_SHA256 = "7467306ee0feed4971260f3c87421154a05be571d944e9cb021a5713700c38f0"
STORY_START = "Alice was beginning to get very tired"
STORY_END = "THE END"
NAMED = ("alice",)


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


def alice_path(download: bool = True) -> Path:
    """``alice29.txt`` in the workbench cache, fetched from PyPI (brotli sdist) when missing.

    >>> alice_path().name                                          # doctest: +SKIP
    'alice29.txt'
    """
    target = cache_dir() / "texts" / "alice29.txt"
    if target.exists():
        return target
    if not download:
        raise FileNotFoundError(f"{target} is missing; call alice_path(download=True) or pass a text file path")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="brotli-sdist-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   f"brotli=={BROTLI_VERSION}", "-d", tmp, "-q"]
        done = subprocess.run(command, capture_output=True, text=True)
        archives = list(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise FileNotFoundError(
                f"could not download the brotli=={BROTLI_VERSION} source distribution from PyPI "
                f"(pip said: {done.stderr.strip()[-300:]}); pass a text file path instead, e.g. "
                f"--text ../shared/data/alice/alice_pg11.txt")
        with tarfile.open(archives[0]) as archive:
            data = archive.extractfile(ALICE_MEMBER).read()  # only this one file
    digest = hashlib.sha256(data).hexdigest()
    if digest != ALICE_SHA256:
        raise ValueError(f"alice29.txt from brotli=={BROTLI_VERSION} has sha256 {digest}, expected {ALICE_SHA256}")
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    os.replace(partial, target)
    return target


def resolve_text_path(source: str | os.PathLike) -> Path:
    """A text name (``alice``) or a file path -> an existing file; errors name the fix."""
    if str(source) == "alice":
        return alice_path()
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"text {str(source)!r}: no such file; give a path to a UTF-8 text file "
                                f"or one of the named texts {list(NAMED)}")
    return path


def load_text(source: str | os.PathLike = "alice") -> str:
    """The normalised story text of a named text or file.

    >>> load_text("../shared/data/alice/alice_pg11.txt")[:37]     # doctest: +SKIP
    'Alice was beginning to get very tired'
    """
    path = resolve_text_path(source)
    return normalize_book(path.read_text(encoding="utf-8", errors="replace"))


def text_fingerprint(text: str) -> str:
    """Short sha256 of a text (saved with each run so results name the exact text)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]
