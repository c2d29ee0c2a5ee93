"""ToyMovieReview prompts built from the sentiment lexicons (the ``toy-movie-reviews`` dataset).

ToyMovieReview (Tigges et al.): ``I thought this movie was {ADJ}, I {VERB} it. Conclusion: This
movie is`` with answers `` good`` / `` bad``. Adjectives and verbs are words on which VADER and
TextBlob agree (see `workbench.data.lexicons`), kept only where they are one token for the model's
tokenizer, so every prompt has the same length and clean/flipped prompts align token by token.
The train/test split is by adjective. The templates and word frame are this module's constants;
`canonical_bytes` serialises them for the registry's sha256 (card: ``datasets/toy-movie-reviews.md``).

>>> TEMPLATE.format(adj="great", verb="loved")
'I thought this movie was great, I loved it. Conclusion: This movie is'
"""

from __future__ import annotations

import json
import random
import re
from typing import Iterable

import pandas as pd

from .lexicons import agreeing_words, load_textblob, load_vader

TEMPLATE = "I thought this movie was {adj}, I {verb} it. Conclusion: This movie is"
ANSWERS = (" good", " bad")  # (positive, negative) next tokens
# Past-tense verbs that fit "I ___ it"; a grammatical frame only, the lexicons decide sentiment.
VERB_FRAME = ("loved", "liked", "enjoyed", "adored", "admired", "appreciated", "hated", "disliked",
              "despised", "loathed", "detested", "resented")


def canonical_bytes() -> bytes:
    """The dataset's definition (template, answers, verb frame) as bytes, for its sha256."""
    return json.dumps({"template": TEMPLATE, "answers": ANSWERS, "verb_frame": VERB_FRAME}, sort_keys=True).encode()


def single_token_words(tokenizer, words: Iterable[str], prefix: str = " ") -> list[str]:
    """The words that are exactly one token when written after ``prefix`` (a leading space)."""
    return [w for w in words if len(tokenizer(prefix + w, add_special_tokens=False)["input_ids"]) == 1]


def check_single_tokens(tokenizer, texts: Iterable[str]) -> list[int]:
    """Token ids of texts that must each be one token (e.g. answers ``" good"``), else a clear error."""
    ids = []
    for text in texts:
        found = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(found) != 1:
            raise ValueError(f"answer {text!r} is {len(found)} tokens ({tokenizer.convert_ids_to_tokens(found)}) "
                             f"for this tokenizer; choose single-token answers, e.g. ' good' / ' bad'")
        ids.append(found[0])
    return ids


def sentiment_words(tokenizer, vader: dict | None = None, textblob: pd.DataFrame | None = None,
                    min_vader: float = 1.5, min_textblob: float = 0.3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(adjectives, verbs): lexicon-agreeing words that are one token each for ``tokenizer``.

    Adjectives: TextBlob ``JJ`` words agreeing with VADER. Verbs: `VERB_FRAME` words present in
    both lexicons (any part of speech) with the same sign, VADER ``|v| >= min_vader`` and TextBlob
    ``|p| >= 0.15`` (TextBlob scores verbs weakly). Both tables: word, vader, textblob, sentiment.
    """
    vader = load_vader() if vader is None else vader
    textblob = load_textblob() if textblob is None else textblob
    adjectives = agreeing_words(vader, textblob, "JJ", min_vader, min_textblob)
    adjectives = adjectives[adjectives["word"].isin(single_token_words(tokenizer, adjectives["word"]))]
    tb = textblob.set_index("word")["polarity"]
    rows = [(w, vader[w], float(tb[w]), 1 if vader[w] > 0 else -1) for w in VERB_FRAME
            if w in vader and w in tb.index and abs(vader[w]) >= min_vader and abs(tb[w]) >= 0.15
            and (vader[w] > 0) == (tb[w] > 0)]
    verbs = pd.DataFrame(rows, columns=["word", "vader", "textblob", "sentiment"])
    verbs = verbs[verbs["word"].isin(single_token_words(tokenizer, verbs["word"]))]
    for name, table in (("adjectives", adjectives), ("verbs", verbs)):
        counts = table["sentiment"].value_counts()
        if counts.get(1, 0) < 1 or counts.get(-1, 0) < 1:
            raise ValueError(f"no {name} of both signs survive the lexicon agreement and single-token filter "
                             f"(counts {counts.to_dict()}); lower min_vader={min_vader} / min_textblob={min_textblob}")
    return adjectives.reset_index(drop=True), verbs.reset_index(drop=True)


def toy_movie_reviews(tokenizer, test_fraction: float = 0.3, seed: int = 0, max_per_sentiment: int | None = None,
                      adjectives: pd.DataFrame | None = None, verbs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One ToyMovieReview prompt per adjective, its verb of the same sentiment cycled.

    Words that are also verbs (``loved`` is a TextBlob adjective) are not used as adjectives.
    Columns: prompt, adjective, verb, sentiment (+1/-1), answer, foil, split ('train'/'test',
    by adjective, balanced per sentiment).

    >>> df = toy_movie_reviews(hm.tokenizer)                             # doctest: +SKIP
    >>> df.prompt[0]                                                     # doctest: +SKIP
    'I thought this movie was adorable, I loved it. Conclusion: This movie is'
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} must be strictly between 0 and 1 (e.g. 0.3)")
    check_single_tokens(tokenizer, ANSWERS)
    if adjectives is None or verbs is None:
        adjectives, verbs = sentiment_words(tokenizer)
    rng = random.Random(seed)
    rows = []
    for sign in (1, -1):
        adjs = sorted(set(adjectives.loc[adjectives["sentiment"] == sign, "word"]) - set(verbs["word"]))
        rng.shuffle(adjs)
        adjs = adjs[:max_per_sentiment] if max_per_sentiment else adjs
        vbs = sorted(verbs.loc[verbs["sentiment"] == sign, "word"])
        n_test = max(1, round(len(adjs) * test_fraction))
        if len(adjs) - n_test < 1:
            raise ValueError(f"only {len(adjs)} adjectives of sentiment {sign:+d}: too few for a train/test split")
        answer, foil = ANSWERS if sign > 0 else ANSWERS[::-1]
        for i, adj in enumerate(adjs):
            rows.append({"prompt": TEMPLATE.format(adj=adj, verb=vbs[i % len(vbs)]), "adjective": adj,
                         "verb": vbs[i % len(vbs)], "sentiment": sign, "answer": answer, "foil": foil,
                         "split": "test" if i < n_test else "train"})
    return pd.DataFrame(rows)


def contrast_pairs(reviews: pd.DataFrame, split: str | None = None, seed: int = 0) -> pd.DataFrame:
    """Pairs (clean, flipped) of opposite sentiment in the same split, each prompt once as clean.

    Columns: clean, flipped, sentiment (of the clean prompt), answer, foil (the clean's answers).
    """
    table = reviews if split is None else reviews[reviews["split"] == split]
    rng = random.Random(seed)
    rows = []
    for sign in (1, -1):
        clean = table[table["sentiment"] == sign]
        others = list(table.loc[table["sentiment"] == -sign, "prompt"])
        if not others or clean.empty:
            raise ValueError(f"split {split!r} lacks prompts of both sentiments; cannot build contrast pairs")
        rng.shuffle(others)
        for i, row in enumerate(clean.itertuples()):
            rows.append({"clean": row.prompt, "flipped": others[i % len(others)], "sentiment": sign,
                         "answer": row.answer, "foil": row.foil})
    return pd.DataFrame(rows)


def word_positions(tokenizer, prompt: str, words: Iterable[str]) -> list[int]:
    """Token index (counting real tokens, special ones included) of each word's first occurrence.

    A word must be one token preceded by a space or start the prompt, e.g. the ADJ and VERB slots.

    >>> word_positions(tok, "I thought this movie was good, I loved it.", ["good", "loved"])  # doctest: +SKIP
    [5, 8]
    """
    found, after = [], 0
    ids = tokenizer(prompt)["input_ids"]
    for word in words:  # each word is searched after the previous one
        match = re.compile(rf"(^|(?<=\s)){re.escape(word)}\b").search(prompt, after)
        if match is None:
            raise ValueError(f"word {word!r} not found in prompt {prompt!r}")
        index = len(tokenizer(prompt[: match.start()].rstrip())["input_ids"]) if match.start() else len(
            tokenizer("")["input_ids"])
        piece = tokenizer.decode([ids[index]]).strip() if index < len(ids) else ""
        if piece != word:
            raise ValueError(f"word {word!r} in {prompt!r} is not a single token at index {index} "
                             f"(found {piece!r}); use words that are one token after a space")
        found.append(index)
        after = match.end()
    return found
