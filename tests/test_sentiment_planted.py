"""Causal tests on a tiny Llama with a planted sentiment direction u.

The planted model: sentiment words' embeddings carry ±alpha·u (other words none); layer 0's attention is uniform
(q = 0) and copies the u-coordinate to every later token; every other attention and MLP output
is zero; the unembedding rows of 'good'/'bad' are ±beta·u. So the answer's logit difference
depends on the u-coordinate only, and only through layer 0's attention.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import WORDS, tiny_model

from workbench.data.reviews import contrast_pairs, toy_movie_reviews
from probes.sentiment.causal import (DirectionalAblation, directional_patch, flip_rate, logit_differences,
                                     recovery)
from probes.sentiment.experiments import patching_curve, sst_ablation
from probes.sentiment.fit import fit_sentiment_directions
from workbench import Patch, PlanItem

POSITIVE, NEGATIVE = ("good", "great", "loved"), ("bad", "awful", "hated")
ADJECTIVES = pd.DataFrame({"word": ["good", "great", "bad", "awful"], "sentiment": [1, 1, -1, -1]})
VERBS = pd.DataFrame({"word": ["loved", "hated"], "sentiment": [1, -1]})


def planted_model(alpha: float = 4.0, gamma: float = 8.0, beta: float = 2.0, seed: int = 0):
    """(hooked tiny llama, planted unit direction u (d,))."""
    hm = tiny_model("llama", seed)
    model = hm.model
    d = model.config.hidden_size
    u = torch.randn(d, generator=torch.Generator().manual_seed(seed + 1))
    u = u / u.norm()  # (d,)
    ids = {w: i for i, w in enumerate(WORDS)}
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        attention = model.model.layers[0].self_attn
        attention.q_proj.weight.zero_()  # uniform attention over the prefix
        attention.v_proj.weight.zero_()
        attention.v_proj.weight[0] = u  # key/value head 0, channel 0 reads the u-coordinate
        attention.o_proj.weight[:, 0] = gamma * u  # query head 0, channel 0 writes it back along u
        embeddings = model.model.embed_tokens.weight
        assert model.lm_head.weight.data_ptr() != embeddings.data_ptr(), "the planted model needs untied heads"
        embeddings -= (embeddings @ u)[:, None] * u  # only sentiment words have a u-coordinate
        for word in POSITIVE:
            embeddings[ids[word]] += alpha * u
        for word in NEGATIVE:
            embeddings[ids[word]] -= alpha * u
        model.lm_head.weight[ids["good"]] = beta * u
        model.lm_head.weight[ids["bad"]] = -beta * u
    return hm, u


@pytest.fixture(scope="module")
def planted():
    hm, u = planted_model()
    reviews = toy_movie_reviews(hm.tokenizer, test_fraction=0.5, adjectives=ADJECTIVES, verbs=VERBS)
    fitted = fit_sentiment_directions(hm, reviews, layers=[0, 1])
    return hm, u, reviews, fitted


def _ids(hm, words):
    return [hm.tokenizer.convert_tokens_to_ids(w) for w in words]


def test_planted_model_answers_by_sentiment(planted):
    hm, _, reviews, _ = planted
    ld = logit_differences(hm, list(reviews.prompt), _ids(hm, ["good"] * 4), _ids(hm, ["bad"] * 4))
    assert (torch.sign(ld) == torch.tensor(reviews.sentiment.tolist())).all() and ld.abs().min() > 1.0


def test_planted_direction_recovered_by_every_method(planted):
    _, u, _, fitted = planted
    for layer in (0, 1):
        for method in ("mean_diff", "probe", "pca", "kmeans"):
            cosine = float(fitted.directions[layer][method].vector @ u)
            assert cosine > 0.99, (layer, method, cosine)  # oriented: positive, not just |cos|
    assert (fitted.scores["accuracy"] == 1.0).all()
    cos = fitted.cosines.query("layer == 0 and a == 'mean_diff' and b == 'probe'")["cosine"].item()
    assert cos > 0.98


def test_ablating_the_planted_direction_removes_its_effect(planted):
    hm, u, reviews, _ = planted
    prompts, good, bad = list(reviews.prompt), _ids(hm, ["good"] * 4), _ids(hm, ["bad"] * 4)
    plain = logit_differences(hm, prompts, good, bad)
    ablated = logit_differences(hm, prompts, good, bad, lambda a, b: [PlanItem("L0.resid_post", "all", DirectionalAblation(u))])
    assert ablated.abs().max() < 1e-4 * plain.abs().min()
    other = torch.randn(u.shape[0], generator=torch.Generator().manual_seed(5))
    other = other - (other @ u) * u  # orthogonal to u
    kept = logit_differences(hm, prompts, good, bad, lambda a, b: [PlanItem("L0.resid_post", "all", DirectionalAblation(other))])
    assert torch.allclose(kept, plain, rtol=0.05)
    # before layer 0's attention, ablating only the adjective and verb leaves no sentiment to copy:
    # every prompt gets the same answer
    early = logit_differences(hm, prompts, good, bad, lambda a, b: [PlanItem("L0.resid_pre", [5, 8], DirectionalAblation(u))])
    assert float(early.max() - early.min()) < 1e-3 * float(plain.max() - plain.min())  # fp32 noise, renormed


def test_recovery_is_one_for_a_full_clean_patch_and_zero_for_none(llama):
    clean = ["I thought the movie was good , I loved it . the movie is"] * 2
    flipped = ["I thought the movie was bad , I hated it . the movie is"] * 2
    good, bad = _ids(llama, ["good"] * 2), _ids(llama, ["bad"] * 2)
    ld_clean, ld_flipped = logit_differences(llama, clean, good, bad), logit_differences(llama, flipped, good, bad)
    # Patch needs a source run: the clean prompts go in through intervene's sources
    with llama.intervene([PlanItem("L0.resid_pre", "all", Patch())], sources=[clean]):
        full = logit_differences(llama, flipped, good, bad)
    none = logit_differences(llama, flipped, good, bad)
    assert recovery(full, ld_clean, ld_flipped) == pytest.approx(1.0, abs=1e-5)
    assert recovery(none, ld_clean, ld_flipped) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="undefined"):
        recovery(none, ld_flipped, ld_flipped)


def test_directional_patching_curve_on_the_planted_model(planted):
    hm, _, reviews, fitted = planted
    pairs = contrast_pairs(reviews, "test")
    curve = patching_curve(hm, pairs, fitted, layers=[0, 1], methods=["mean_diff", "pca"],
                           position_sets=["all", "comma"]).set_index(["layer", "method", "positions"])
    for method in ("mean_diff", "pca"):
        assert curve.loc[(0, method, "all"), "recovery"] == pytest.approx(1.0, abs=0.02)
        assert curve.loc[(0, method, "all"), "flip_rate"] == 1.0
    # after layer 0 nothing moves between positions: the comma's state never reaches the answer
    assert abs(curve.loc[(1, "mean_diff", "comma"), "recovery"]) < 1e-3
    assert curve.loc[(1, "mean_diff", "comma"), "flip_rate"] == 0.0


def test_flip_rate_counts_only_pairs_the_flipped_run_got_wrong():
    assert flip_rate(torch.tensor([1.0, -1.0, 5.0]), torch.tensor([-2.0, -2.0, 3.0])) == 0.5


def test_directional_formulas():
    u = torch.tensor([0.0, 3.0, 4.0])
    base, source = torch.tensor([[[1.0, 1.0, 1.0]]]), torch.tensor([[[0.0, 3.0, 4.0]]])
    patched = directional_patch(u)(base, source)
    unit = u / 5
    assert float(patched[0, 0] @ unit) == pytest.approx(float(source[0, 0] @ unit))
    residual = lambda x: x - (x @ unit)[..., None] * unit  # noqa: E731
    assert torch.allclose(residual(patched), residual(base))
    assert float(DirectionalAblation(u, value=2.0)(base)[0, 0] @ unit) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="non-zero"):
        DirectionalAblation(torch.zeros(3))


def test_sst_style_ablation_on_the_planted_model(planted):
    hm, _, _, fitted = planted
    texts = ["I thought the movie was good , I loved it", "the movie was great", "I hated it , the movie was bad",
             "the movie was awful"] * 2
    sst = pd.DataFrame({"text": texts, "sentiment": [1, 1, -1, -1] * 2})
    table = sst_ablation(hm, sst, fitted, layers=[0], answers=(" good", " bad"),
                         template="{text} . the movie is").set_index(["direction", "positions"])
    assert table.loc[("none", "-"), "accuracy"] == 1.0
    assert table.loc[("sentiment", "all"), "accuracy"] == 0.5  # every prompt gets the same answer
    assert table.loc[("sentiment", "all"), "above_chance_lost"] == pytest.approx(1.0)
    assert table.loc[("random", "all"), "accuracy"] == 1.0
    # the comma's state at layer 0 reaches the answer only through layer 0's attention: no effect
    assert table.loc[("sentiment", "comma"), "share_of_all"] == 0.0


def test_non_first_positions_skip_each_examples_first_real_token():
    from probes.sentiment.causal import position_set
    ids = torch.tensor([[0, 0, 5, 6, 7], [5, 6, 7, 8, 9]])
    resolved = position_set("non_first").resolve(ids, (ids != 0).long())
    assert resolved.index[0][resolved.mask[0]].tolist() == [3, 4]  # left-padded: first real token is 2
    assert resolved.index[1][resolved.mask[1]].tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="expected one of"):
        position_set("everywhere")
