"""Sites parse and print; positions resolve to the same tokens under left and right padding."""

import pytest
import torch

from workbench import AllTokens, FirstLast, Indices, Site, TokenMatch, parse_positions
from conftest import word_tokenizer


@pytest.mark.parametrize("text", ["L0.resid_pre", "L3.resid_post", "L12.mlp_act", "L5.head2.z", "L1.z"])
def test_site_round_trip(text):
    assert str(Site.parse(text)) == text
    assert Site.parse(Site.parse(text)) == Site.parse(text)


@pytest.mark.parametrize("bad, expected", [
    ("L3.resid", "unknown component 'resid'"), ("3.resid_post", "cannot parse site '3.resid_post'"),
    ("L3.head1.mlp_out", "head can only be given for component 'z'"), ("Lx.z", "cannot parse site 'Lx.z'"),
    ("", "cannot parse site ''"),
])
def test_site_parse_errors_name_the_value(bad, expected):
    with pytest.raises(ValueError, match=expected):
        Site.parse(bad)


def _batches():
    tok = word_tokenizer()
    texts = ["the cat sat on the mat", "I loved it , and it was great , ."]
    out = {}
    for side in ("left", "right"):
        tok.padding_side = side
        out[side] = tok(texts, return_tensors="pt", padding=True)
    return tok, texts, out


@pytest.mark.parametrize("selector", [FirstLast(1, 1), FirstLast(2, 0), FirstLast(0, 3), Indices([0, -1]),
                                      Indices([[1], [2, 4]]), AllTokens(), TokenMatch(",")])
def test_positions_pick_the_same_tokens_under_left_and_right_padding(selector):
    tok, texts, batches = _batches()
    picked = {}
    for side, enc in batches.items():
        pos = selector.resolve(enc["input_ids"], enc["attention_mask"], tok)
        assert pos.index.shape == pos.mask.shape
        ids = enc["input_ids"].gather(1, pos.index)
        picked[side] = [row[m].tolist() for row, m in zip(ids, pos.mask)]
        # every valid position is a real token, never padding
        assert enc["attention_mask"].gather(1, pos.index)[pos.mask].all()
    assert picked["left"] == picked["right"]
    # and they are the tokens an unpadded run of each text picks
    for i, text in enumerate(texts):
        single = tok([text], return_tensors="pt")
        one = (Indices([selector.indices[i]]) if isinstance(selector, Indices) and isinstance(selector.indices[0], tuple)
               else selector).resolve(single["input_ids"], single["attention_mask"], tok)
        assert single["input_ids"].gather(1, one.index)[one.mask].tolist() == picked["left"][i]


def test_token_match_finds_every_comma():
    tok, _, batches = _batches()
    enc = batches["right"]
    pos = TokenMatch(",").resolve(enc["input_ids"], enc["attention_mask"], tok)
    comma = tok.convert_tokens_to_ids(",")
    assert pos.mask.sum(1).tolist() == [0, 2]
    assert (enc["input_ids"][1, pos.index[1]] == comma).all()


def test_parse_positions_specs():
    assert parse_positions("f1+l1") == FirstLast(1, 1)
    assert parse_positions("l1") == FirstLast(0, 1)
    assert parse_positions("f7+l7") == FirstLast(7, 7)
    assert parse_positions("all") == AllTokens()
    assert parse_positions("match:,") == TokenMatch(",")
    assert parse_positions("0,-1") == Indices([0, -1])
    assert parse_positions(3) == Indices([3])
    with pytest.raises(ValueError, match="cannot parse position spec 'x9'"):
        parse_positions("x9")


def test_position_beyond_the_sequence_names_the_range():
    ids = torch.tensor([[5, 6, 7]])
    mask = torch.ones_like(ids)
    with pytest.raises(IndexError, match=r"example 0 has 3 tokens \(valid indices 0..2"):
        Indices([3]).resolve(ids, mask)
    with pytest.raises(IndexError, match="beyond the sequence"):
        FirstLast(0, 4).resolve(ids, mask)
