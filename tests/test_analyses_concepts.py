"""Concept detection (AxBench style): AUROC about 1 for a planted direction and about 0.5 for a
random one, on synthetic states and through a tiny model whose concept words carry a planted
embedding direction; steering factors chosen on validation within the loss budget."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from analyses.concept_data import concept_texts
from analyses.concepts import auroc, concept_detection, fit_direction, max_scores, mean_pooled

CONCEPT = ["good", "great", "loved", "awful", "hated", "bad"]
OTHER = ["cat", "dog", "mat", "city", "country", "capital"]
TEMPLATES = ("the {word} sat on the mat .", "I thought it was {word} .", "a {word} in the city of Paris")
PROMPTS = ["I thought it was", "the movie was"]


def planted_states(n: int, T: int = 8, d: int = 16, strength: float = 12.0, seed: int = 0):
    """Token states with noise; concept texts (label 1) carry ``strength`` along u at one token."""
    g = torch.Generator().manual_seed(seed)
    u = torch.zeros(d)
    u[3] = 1.0
    states = torch.randn(n, T, d, generator=g)  # (n, T, d)
    labels = torch.arange(n) % 2
    where = torch.randint(0, T, (n,), generator=g)
    states[labels == 1, where[labels == 1]] += strength * u
    return states, torch.ones(n, T, dtype=torch.bool), labels, u


@pytest.mark.parametrize("method", ["diffmean", "probe", "pca"])
def test_planted_direction_is_detected_and_a_random_one_is_not(method):
    train, train_mask, train_labels, u = planted_states(200, seed=0)
    test, test_mask, test_labels, _ = planted_states(400, seed=1)
    v = fit_direction(method, mean_pooled(train, train_mask), train_labels)
    assert float(v @ u) > 0.8  # it found the planted axis
    assert auroc(max_scores(test, test_mask, v), test_labels) > 0.97
    g = torch.Generator().manual_seed(7)
    random = torch.randn(16, generator=g)
    random[3] = 0.0  # orthogonal to the planted axis: sees noise only
    assert abs(auroc(max_scores(test, test_mask, random / random.norm()), test_labels) - 0.5) < 0.08


def test_detection_and_steering_through_a_tiny_model_with_a_planted_concept(one_thread):
    hm = tiny_model("llama")
    ids = [hm.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in CONCEPT]
    u = torch.randn(hm.model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        hm.model.model.embed_tokens.weight[ids] += 3.0 * u / u.norm() * hm.model.model.embed_tokens.weight.norm(dim=-1).mean()
    texts = concept_texts(CONCEPT, OTHER, templates=TEMPLATES, splits=(0.5, 0.25, 0.25))
    result = concept_detection(hm, texts, "L1.resid_pre", reft_steps=25, prompts=PROMPTS,
                               factors=(0.0, 0.5, 1.0, 2.0), max_loss_increase=0.5)
    table = result.table.set_index("method")
    assert list(table.index) == ["diffmean", "probe", "pca", "reft_r1"]
    for method in ("diffmean", "probe", "reft_r1"):  # held-out words share only the planted direction
        assert table.loc[method, "auroc"] > 0.9, result.table
    sweep = result.factors
    for method, row in table.iterrows():
        chosen = sweep[(sweep.method == method) & (sweep.factor == row.factor)]
        assert row.factor in (0.0, 0.5, 1.0, 2.0)
        assert float(chosen.loss_increase.iloc[0]) <= 0.5 + 1e-9
        admissible = sweep[(sweep.method == method) & (sweep.loss_increase <= 0.5)]
        assert float(chosen.concept_prob.iloc[0]) >= float(admissible.concept_prob.max()) - 1e-12 or row.factor == 0.0
    # the unplanted model sees held-out words as noise: its DiffMean ranks them near chance
    plain = concept_detection(tiny_model("llama"), texts, "L1.resid_pre", methods=["diffmean"],
                              prompts=PROMPTS, factors=(0.0,))
    assert float(plain.table.auroc.iloc[0]) < table.loc["diffmean", "auroc"]


def test_concept_texts_split_by_word():
    texts = concept_texts(CONCEPT, OTHER, templates=TEMPLATES)
    words = texts.groupby("split").word.apply(set)
    assert not (words["train"] & words["test"]) and not (words["train"] & words["val"])
    assert texts.groupby(["split", "label"]).size().min() >= len(TEMPLATES)


@pytest.mark.parametrize("kwargs, match", [
    (dict(methods=["sae"]), "choose from"),
    (dict(factors=(float("nan"),)), "finite"),
    (dict(site="L9.resid_pre"), "3 layers"),
])
def test_bad_arguments(kwargs, match):
    texts = concept_texts(CONCEPT, OTHER, templates=TEMPLATES)
    args = dict(site="L1.resid_pre", prompts=PROMPTS) | kwargs
    with pytest.raises(ValueError, match=match):
        concept_detection(tiny_model("llama"), texts, **args)
