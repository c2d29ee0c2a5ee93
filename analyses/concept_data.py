"""Concept vs non-concept texts, generated offline from templates and word lists.

A concept is a word list (default: strongly positive adjectives on which VADER and TextBlob agree,
from the registry's ``lexicons`` dataset); the non-concept texts fill the same templates with
neutral adjectives (TextBlob polarity 0, absent from VADER). Both classes share every template,
so only the concept word tells them apart. Words, not texts, are split into train / validation /
test, so held-out texts hold words no detector has seen.

>>> df = concept_texts(["great", "lovely"], ["blue", "wooden"], templates=("It was {word}.",),
...                    splits=(0.5, 0.0, 0.5))
>>> sorted(df.columns)
['label', 'split', 'text', 'word']
>>> df.groupby("split").label.nunique().to_dict()
{'test': 2, 'train': 2}
"""

from __future__ import annotations

import random
import re
from typing import Sequence

import pandas as pd

TEMPLATES = (
    "The {word} house stood at the end of the street.",
    "She described the weather that morning as {word}.",
    "It was a {word} afternoon in the old town.",
    "He wrote in his notes that the meeting was {word}.",
    "They walked past the {word} garden behind the school.",
    "Everyone agreed that the long trip had been {word}.",
)
CONCEPTS = ("positive", "negative")  # sentiment concepts the lexicons give


def lexicon_words(concept: str = "positive", limit: int = 60, seed: int = 0) -> tuple[list[str], list[str]]:
    """(concept words, neutral words) from the ``lexicons`` registry dataset (VADER + TextBlob).

    >>> pos, neutral = lexicon_words("positive")     # doctest: +SKIP
    >>> pos[:3], neutral[:3]                         # doctest: +SKIP
    """
    from workbench.data.lexicons import agreeing_words, load_textblob, load_vader

    if concept not in CONCEPTS:
        raise ValueError(f"concept {concept!r}: the lexicons give {list(CONCEPTS)}; choose one of those")
    vader, textblob = load_vader(), load_textblob()
    agreeing = agreeing_words(vader, textblob, pos="JJ", min_vader=1.5, min_textblob=0.3)
    words = agreeing[agreeing["sentiment"] == (1 if concept == "positive" else -1)]["word"].tolist()
    neutral = textblob[(textblob.polarity == 0) & (textblob.pos == "JJ")]["word"].tolist()
    neutral = [w for w in dict.fromkeys(neutral) if w not in vader and re.fullmatch(r"[a-z]+", w)]
    words = [w for w in dict.fromkeys(words) if re.fullmatch(r"[a-z]+", w)]
    rng = random.Random(seed)
    rng.shuffle(words)
    rng.shuffle(neutral)
    return sorted(words[:limit]), sorted(neutral[:limit])


def _split_words(words: Sequence[str], splits: tuple[float, float, float], rng: random.Random) -> dict[str, str]:
    words = list(words)
    rng.shuffle(words)
    n = len(words)
    n_val = max(1, round(splits[1] * n)) if splits[1] > 0 else 0
    n_test = max(1, round(splits[2] * n)) if splits[2] > 0 else 0
    n_train = max(1, n - n_val - n_test) if splits[0] > 0 else 0
    if n_train + n_val + n_test > n:
        raise ValueError(f"{n} words cannot fill the train/val/test splits {splits} (one word each at least): "
                         f"give at least {n_train + n_val + n_test} words per class")
    names = ["train"] * n_train + ["val"] * n_val
    names += ["test"] * (n - len(names))
    return dict(zip(words, names))


def concept_texts(concept_words: Sequence[str], other_words: Sequence[str], templates: Sequence[str] = TEMPLATES,
                  splits: tuple[float, float, float] = (0.5, 0.25, 0.25), seed: int = 0) -> pd.DataFrame:
    """Every template filled with every word: columns text, label (1 concept / 0 not), word,
    split (train/val/test, by word, in the same shares for both classes)."""
    if not concept_words or not other_words:
        raise ValueError(f"{len(concept_words)} concept and {len(other_words)} other words: give at least "
                         f"one of each (e.g. 8 of each, for train/val/test splits by word)")
    if len(splits) != 3 or abs(sum(splits) - 1) > 1e-6 or min(splits) < 0:
        raise ValueError(f"splits {splits}: give three non-negative shares (train, val, test) that sum to 1, "
                         f"e.g. (0.5, 0.25, 0.25)")
    if not templates or any("{word}" not in t for t in templates):
        raise ValueError(f"templates {list(templates)[:3]}: each must contain '{{word}}'; e.g. 'It was {{word}}.'")
    rng = random.Random(seed)
    rows = []
    for label, words in ((1, concept_words), (0, other_words)):
        where = _split_words(words, splits, rng)
        rows += [{"text": t.format(word=w), "label": label, "word": w, "split": where[w]}
                 for w in words for t in templates]
    return pd.DataFrame(rows)


def steering_prompts(templates: Sequence[str] = TEMPLATES) -> list[str]:
    """The templates cut before the word slot: prompts whose next token could be the concept."""
    return [t.split("{word}")[0].rstrip() for t in templates if t.split("{word}")[0].strip()]
