"""Sentiment lexicons from PyPI packages (the ``lexicons`` dataset): VADER and TextBlob's en-sentiment.xml.

Both are read as files (the packages are never asked to score text), so a user can point the
loaders at their own copy. Words on which the two lexicons agree in sign, both strongly enough,
make the adjective and verb lists of the ToyMovieReview prompts.

>>> vader = parse_vader_lines(["good\\t1.9\\t0.9\\t[2, 1]", "bad\\t-2.5\\t0.7\\t[-3, -2]"])
>>> vader["bad"]
-2.5
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable

import pandas as pd

from .registry import file_paths


def _lexicon_file(relative: str) -> Path:
    """A lexicon file inside its installed package (registry dataset ``lexicons``), not imported."""
    path = file_paths("lexicons")[relative]  # an error naming the pip install when the package is absent
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed package; reinstall it "
                                f"(`workbench data verify lexicons` shows what the card expects)")
    return path


def vader_path() -> Path:
    """``vader_lexicon.txt`` inside the installed vaderSentiment package."""
    return _lexicon_file("vaderSentiment/vader_lexicon.txt")


def textblob_path() -> Path:
    """``en/en-sentiment.xml`` inside the installed textblob package (no corpora download needed)."""
    return _lexicon_file("textblob/en/en-sentiment.xml")


def parse_vader_lines(lines: Iterable[str], source: str = "<lines>") -> dict[str, float]:
    """VADER lines ``token<TAB>mean<TAB>std<TAB>[ratings]`` -> {token: mean valence in [-4, 4]}.

    >>> parse_vader_lines(["nice\\t1.8\\t0.6\\t[2]"])
    {'nice': 1.8}
    """
    found: dict[str, float] = {}
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise ValueError(
                f"{source} line {number}: {line[:60]!r} is not a VADER entry; expected "
                f"'token<TAB>mean<TAB>std<TAB>[ratings]' (is this vader_lexicon.txt?)"
            )
        try:
            mean = float(fields[1])
        except ValueError:
            raise ValueError(f"{source} line {number}: mean valence {fields[1]!r} is not a number; "
                             f"expected a float in [-4, 4]") from None
        if not -4.0 <= mean <= 4.0 or math.isnan(mean):
            raise ValueError(f"{source} line {number}: mean valence {mean} outside VADER's range [-4, 4]")
        found[fields[0]] = mean
    if not found:
        raise ValueError(f"{source}: no VADER entries found; expected 'token<TAB>mean<TAB>...' lines")
    return found


def load_vader(path: str | Path | None = None) -> dict[str, float]:
    """The VADER lexicon as {token: mean valence}, from ``path`` or the installed package.

    >>> load_vader()["good"]                                   # doctest: +SKIP
    1.9
    """
    path = Path(path) if path is not None else vader_path()
    with open(path, encoding="utf-8") as handle:
        return parse_vader_lines(handle, source=str(path))


def parse_textblob_xml(text: str, source: str = "<xml>") -> pd.DataFrame:
    """TextBlob's sentiment XML -> one row per word: word, polarity (mean over senses), pos tags.

    >>> xml = '<sentiment><word form="good" pos="JJ" polarity="0.7"/></sentiment>'
    >>> parse_textblob_xml(xml).to_dict("records")
    [{'word': 'good', 'polarity': 0.7, 'pos': 'JJ'}]
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        raise ValueError(f"{source} is not well-formed XML ({error}); expected TextBlob's en-sentiment.xml") from None
    rows = []
    for number, word in enumerate(root.iter("word"), start=1):
        form, polarity = word.get("form"), word.get("polarity")
        if not form or polarity is None:
            raise ValueError(f"{source}: <word> entry {number} lacks form= or polarity= "
                             f"({ET.tostring(word)[:80]!r}); every entry needs both")
        try:
            value = float(polarity)
        except ValueError:
            raise ValueError(f"{source}: word {form!r} has polarity {polarity!r}; expected a float in [-1, 1]") from None
        if not -1.0 <= value <= 1.0:
            raise ValueError(f"{source}: word {form!r} has polarity {value} outside [-1, 1]")
        rows.append((form.lower(), value, word.get("pos") or ""))
    if not rows:
        raise ValueError(f"{source}: no <word form=... polarity=...> entries; is this en-sentiment.xml?")
    df = pd.DataFrame(rows, columns=["word", "polarity", "pos"])
    return (df.groupby("word", sort=True)
              .agg(polarity=("polarity", "mean"), pos=("pos", lambda p: ",".join(sorted(set(p) - {""}))))
              .reset_index())


def load_textblob(path: str | Path | None = None) -> pd.DataFrame:
    """TextBlob's lexicon (word, polarity, pos) from ``path`` or the installed package."""
    path = Path(path) if path is not None else textblob_path()
    return parse_textblob_xml(Path(path).read_text(encoding="utf-8"), source=str(path))


def agreeing_words(vader: dict[str, float], textblob: pd.DataFrame, pos: str = "JJ",
                   min_vader: float = 1.5, min_textblob: float = 0.3) -> pd.DataFrame:
    """Words whose VADER valence and TextBlob polarity share a sign, both strong enough.

    ``pos`` keeps TextBlob words with that part-of-speech tag (``JJ`` adjectives, ``VB`` verbs);
    ``min_vader`` (of 4) and ``min_textblob`` (of 1) are the smallest absolute scores kept.
    Returns word, vader, textblob, sentiment (+1 / -1), sorted by word.

    >>> tb = parse_textblob_xml('<s><word form="good" pos="JJ" polarity="0.7"/></s>')
    >>> agreeing_words({"good": 1.9}, tb)["sentiment"].tolist()
    [1]
    """
    if not 0 <= min_vader <= 4 or not 0 <= min_textblob <= 1:
        raise ValueError(f"thresholds min_vader={min_vader} (0..4) and min_textblob={min_textblob} (0..1) "
                         f"out of range")
    tagged = textblob[textblob["pos"].str.split(",").apply(lambda tags: pos in tags)]
    rows = []
    for word, polarity in zip(tagged["word"], tagged["polarity"]):
        valence = vader.get(word)
        if valence is None or abs(valence) < min_vader or abs(polarity) < min_textblob:
            continue
        if (valence > 0) == (polarity > 0):
            rows.append((word, valence, polarity, 1 if valence > 0 else -1))
    return pd.DataFrame(rows, columns=["word", "vader", "textblob", "sentiment"]).sort_values("word", ignore_index=True)
