"""Sentiment data: lexicon parsing and agreement, ToyMovieReview prompts, the SST loader."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import word_tokenizer

from workbench.data.lexicons import agreeing_words, load_textblob, load_vader, parse_textblob_xml, parse_vader_lines
from workbench.data.reviews import check_single_tokens, contrast_pairs, sentiment_words, toy_movie_reviews, word_positions
from workbench.data.sst import detokenize_ptb, load_sst, parse_sst_lines, sst2

WORDS = pd.DataFrame({"word": ["good", "great", "bad", "awful"], "sentiment": [1, 1, -1, -1]})
VERBS = pd.DataFrame({"word": ["loved", "hated"], "sentiment": [1, -1]})


# ---- lexicons ---------------------------------------------------------------------------------
@pytest.mark.parametrize("line, message", [
    ("good 1.9 0.9", "not a VADER entry"),
    ("good\tvery\t0.9\t[2]", "not a number"),
    ("good\t7.5\t0.9\t[2]", "outside VADER's range"),
])
def test_vader_parser_rejects_malformed_lines_naming_the_line(line, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_vader_lines(["ok\t1.0\t0.1\t[1]", line], source="lex.txt")
    assert "lex.txt line 2" in str(error.value)


def test_vader_parser_rejects_an_empty_file():
    with pytest.raises(ValueError, match="no VADER entries"):
        parse_vader_lines(["", "  "])


@pytest.mark.parametrize("xml, message", [
    ("<sentiment><word form='good'", "not well-formed XML"),
    ("<sentiment><word form='good' pos='JJ'/></sentiment>", "lacks form= or polarity="),
    ("<sentiment><word form='good' polarity='high'/></sentiment>", "expected a float"),
    ("<sentiment><word form='good' polarity='3'/></sentiment>", r"outside \[-1, 1\]"),
    ("<sentiment></sentiment>", "no <word"),
])
def test_textblob_parser_rejects_malformed_xml(xml, message):
    with pytest.raises(ValueError, match=message):
        parse_textblob_xml(xml)


def test_textblob_senses_are_averaged_and_agreement_needs_same_sign_and_strength():
    tb = parse_textblob_xml(
        "<s><word form='good' pos='JJ' polarity='0.6'/><word form='good' pos='JJ' polarity='0.8'/>"
        "<word form='sick' pos='JJ' polarity='-0.7'/><word form='mild' pos='JJ' polarity='0.1'/>"
        "<word form='love' pos='VB' polarity='0.5'/></s>")
    assert tb.set_index("word").loc["good", "polarity"] == pytest.approx(0.7)
    vader = {"good": 1.9, "sick": 2.0, "mild": 2.0, "love": 3.2}  # 'sick' disagrees, 'mild' too weak in TextBlob
    assert agreeing_words(vader, tb, "JJ")["word"].tolist() == ["good"]
    assert agreeing_words(vader, tb, "VB")["word"].tolist() == ["love"]
    with pytest.raises(ValueError, match="out of range"):
        agreeing_words(vader, tb, min_vader=9)


def test_installed_lexicons_load_and_agree_on_plain_words():
    pytest.importorskip("vaderSentiment")
    pytest.importorskip("textblob")
    agree = agreeing_words(load_vader(), load_textblob()).set_index("word")["sentiment"]
    assert agree["good"] == 1 and agree["bad"] == -1 and agree["wonderful"] == 1 and agree["terrible"] == -1
    assert len(agree) > 100


# ---- ToyMovieReview ---------------------------------------------------------------------------
def test_reviews_split_by_adjective_with_aligned_slots():
    tok = word_tokenizer()
    reviews = toy_movie_reviews(tok, test_fraction=0.5, adjectives=WORDS, verbs=VERBS)
    assert len(reviews) == 4 and set(reviews["split"]) == {"train", "test"}
    train, test = (set(reviews.loc[reviews.split == s, "adjective"]) for s in ("train", "test"))
    assert not train & test
    assert (reviews.groupby(["split", "sentiment"]).size() == 1).all()  # balanced per sentiment
    row = reviews.iloc[0]
    assert row.answer == (" good" if row.sentiment > 0 else " bad")
    assert row.verb == ("loved" if row.sentiment > 0 else "hated")
    positions = {tuple(word_positions(tok, r.prompt, [r.adjective, r.verb])) for r in reviews.itertuples()}
    assert positions == {(5, 8)}
    pairs = contrast_pairs(reviews, "test")
    assert (pairs["sentiment"] == [1, -1]).all() and (pairs["clean"] != pairs["flipped"]).all()


def test_word_positions_finds_the_verb_after_a_repeated_word():
    tok = word_tokenizer()
    assert word_positions(tok, "I loved it , I loved it", ["loved", "loved"]) == [1, 5]
    with pytest.raises(ValueError, match="not found"):
        word_positions(tok, "I loved it", ["hated"])


def test_reviews_reject_bad_split_and_multi_token_answers():
    tok = word_tokenizer()
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        toy_movie_reviews(tok, test_fraction=1.0, adjectives=WORDS, verbs=VERBS)
    with pytest.raises(ValueError, match="2 tokens"):
        check_single_tokens(tok, [" good movie"])


def test_sentiment_words_keeps_single_token_words_of_both_signs():
    from transformers import AutoTokenizer  # a real BPE tokenizer is needed to tell one token from many
    from workbench.models import cache_dir
    folder = cache_dir() / "smollm2-135m"
    if not (folder / "tokenizer.json").exists():
        pytest.skip(f"the prepared SmolLM2 folder {folder} is absent (make demo prepares it)")
    tok = AutoTokenizer.from_pretrained(folder)
    adjectives, verbs = sentiment_words(tok)
    assert {"good", "bad"} <= set(adjectives["word"]) and {"loved", "hated"} <= set(verbs["word"])
    assert all(len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1 for w in adjectives["word"])
    reviews = toy_movie_reviews(tok, adjectives=adjectives, verbs=verbs)
    assert not set(reviews["adjective"]) & set(verbs["word"])  # 'loved' never fills the ADJ slot
    assert reviews["prompt"].map(lambda p: len(tok(p)["input_ids"])).nunique() == 1


# ---- SST --------------------------------------------------------------------------------------
def test_sst_parser_maps_labels_and_rejects_malformed_lines():
    df = parse_sst_lines(["__label__1\tAwful .", "__label__3\tOk .", "__label__5\tIt 's great ."])
    assert df["sentiment"].tolist() == [-1, 1] and df["text"].tolist() == ["Awful.", "It's great."]
    assert parse_sst_lines(["__label__3\tOk ."], binary=False)["sentiment"].tolist() == [0]
    for bad in ("__label__7\tToo high .", "label 4 no tab", "__label__4\t"):
        with pytest.raises(ValueError, match="not an SST line") as error:
            parse_sst_lines(["__label__4\tFine .", bad], source="sst.txt")
        assert "sst.txt line 2" in str(error.value)


def test_detokenize_ptb_restores_contractions_and_quotes():
    assert detokenize_ptb("`` Wow , '' she said ; it does n't work .") == '"Wow," she said; it doesn\'t work.'


def test_load_sst_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="expected one of"):
        load_sst(tmp_path, "validation")
    with pytest.raises(FileNotFoundError, match="sst_dev.txt"):
        load_sst(tmp_path, "dev")
    (tmp_path / "sst_dev.txt").write_text("__label__4\tFine .\nnot sst\n")
    with pytest.raises(ValueError, match="line 2"):
        load_sst(tmp_path, "dev")


def test_registry_sst_gives_the_standard_sst2_sizes(shared_cache, tmp_path, monkeypatch):
    assert [len(load_sst("sst", s)) for s in ("train", "dev", "test")] == [6920, 872, 1821]
    assert [len(sst2(s)) for s in ("train", "dev", "test")] == [6920, 872, 1821]
    assert len(load_sst("sst", "dev", binary=False)) == 1101  # the 5-class view keeps label 3
    sample = load_sst("sst", "dev", limit=50, seed=1)
    assert len(sample) == 50 and sample.equals(load_sst(shared_cache / "sst", "dev", limit=50, seed=1))
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))  # an empty cache: one error naming the fetch
    with pytest.raises(FileNotFoundError, match=r"dataset 'sst' is not in the cache .*workbench data fetch sst"):
        load_sst("sst", "dev")
