"""Neuron-explanation checks on a tiny Llama with a planted 'good/great' neuron."""

from __future__ import annotations

import pytest
import torch
from conftest import WORDS, tiny_model

from probes.neurons import (Concept, SetNeuron, concept_probability, interventional_scores, neuron_report,
                            observational_scores, site_activations)

NEURON, SITE = 7, "L0.mlp_act"
TEXTS = ["the movie was good", "I thought it was great , I loved it", "the cat sat on the mat",
         "a dog in the city", "Paris is in France and Rome is in Italy", "it was bad and awful",
         "the good dog sat", "great ! the capital of France"]


def planted_neuron_model(seed: int = 0):
    """Layer 0's neuron NEURON reads a direction w that only 'good' and 'great' carry, and writes
    toward the unembedding of 'good'."""
    hm = tiny_model("llama", seed)
    model, ids = hm.model, {w: i for i, w in enumerate(WORDS)}
    w = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(11))
    w = w / w.norm()  # (d,)
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb -= (emb @ w)[:, None] * w
        for word in ("good", "great"):
            emb[ids[word]] += 0.5 * w
        mlp = model.model.layers[0].mlp
        mlp.gate_proj.weight[NEURON] = 3.0 * w
        mlp.up_proj.weight[NEURON] = 3.0 * w
        good = model.lm_head.weight[ids["good"]]
        mlp.down_proj.weight[:, NEURON] = 2.0 * good / good.norm()
    return hm


def test_observational_scores_count_exactly():
    scores = observational_scores([0.0, 5.0, 4.0, 0.1, 3.0], [False, True, True, True, False], threshold=2.0)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3) and scores["firing_tokens"] == 3
    assert observational_scores([1.0, 2.0], [True, False], threshold=5.0)["f1"] == 0.0
    with pytest.raises(ValueError, match="one activation per token"):
        observational_scores([1.0, 2.0], [True])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        observational_scores([1.0, 2.0], [True, False], quantile=1.0)


def test_concept_parsing_and_errors():
    assert Concept.parse("regex:^(good|great)$").matches(" great")
    assert not Concept.parse("regex:good").matches("goods")  # full match
    for bad in ("good,great", "words:", "regex:"):
        with pytest.raises(ValueError, match="cannot parse concept"):
            Concept.parse(bad)
    with pytest.raises(ValueError, match="does not compile"):
        Concept(regex="(")
    with pytest.raises(ValueError, match="exactly one"):
        Concept(words=("a",), regex="a")


def test_set_neuron_sets_one_channel_per_row():
    base = torch.zeros(2, 3, 4)
    out = SetNeuron(torch.tensor([1, 3]), torch.tensor([5.0, -1.0]))(base)
    assert out[0, :, 1].tolist() == [5.0] * 3 and out[1, :, 3].tolist() == [-1.0] * 3
    assert out.abs().sum() == 5.0 * 3 + 1.0 * 3 and base.abs().sum() == 0  # the input is not modified


def test_planted_neuron_is_explained_observationally_and_causally():
    hm = planted_neuron_model()
    concept = Concept.parse("words:good,great")
    acts, tokens = site_activations(hm, SITE, TEXTS)
    present = tokens["token"].map(concept.matches)
    assert present.sum() == 4
    quantile = 1 - present.mean()  # as many firing tokens as concept tokens
    scores = observational_scores(acts[:, NEURON], present, quantile=quantile - 1e-6)
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0 and scores["f1"] == 1.0
    wrong = observational_scores(acts[:, NEURON], tokens["token"].map(Concept.parse("words:bad,cat").matches),
                                 quantile=quantile - 1e-6)
    assert wrong["f1"] == 0.0
    effects = interventional_scores(hm, SITE, NEURON, concept, TEXTS, acts, n_random=10)
    target, random = effects.iloc[0], effects.iloc[1:]
    assert target["is_target"] and target["effect"] > 0
    assert target["effect"] > 5 * random["effect"].abs().max()


def test_concept_probability_batches_neurons_like_single_runs():
    hm = planted_neuron_model()
    ids = Concept.parse("words:good").token_ids(hm.tokenizer)
    neurons, values = torch.tensor([NEURON, 3, 5]), torch.tensor([4.0, 1.0, -2.0])
    together = concept_probability(hm, TEXTS[:3], ids, "L0.mlp_act", neurons, values, batch_size=9)
    for row in range(3):
        alone = concept_probability(hm, TEXTS[:3], ids, "L0.mlp_act", neurons[row:row + 1], values[row:row + 1])
        assert torch.allclose(together[row], alone[0], atol=1e-6)
    plain = concept_probability(hm, TEXTS[:3], ids, "L0.mlp_act")
    assert together.shape == (3, 3) and plain.shape == (1, 3) and not torch.allclose(together[0], plain[0])


def test_neuron_report_saves_tables_and_checks_the_index(tmp_path):
    hm = planted_neuron_model()
    report = neuron_report(hm, SITE, NEURON, Concept.parse("words:good,great"), TEXTS, quantile=0.85,
                           n_random=5, out=tmp_path)
    assert report["interventional"]["percentile"] == 1.0 and report["observational"]["recall"] == 1.0
    assert (tmp_path / "tokens" / "results.parquet").exists() and (tmp_path / "interventions" / "config.json").exists()
    with pytest.raises(ValueError, match=r"has 48 neurons \(0-47\)"):
        neuron_report(hm, SITE, 48, Concept.parse("words:good"), TEXTS)
