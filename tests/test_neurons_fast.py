"""The layers-above path (probes.neurons_fast) equals hooked full forwards, on tiny models."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model
from test_neurons import NEURON, TEXTS, planted_neuron_model

from probes.neurons import Concept, concept_probability, interventional_scores, site_activations
from probes.neurons_fast import fast_supported

SITES = ("L0.mlp_act", "L1.mlp_act", "L0.resid_pre", "L1.resid_post", "L2.head1.z", "L2.attn_out")


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("positions", ["last", "all"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_fast_path_equals_full_forwards(family, positions, attention):
    hm = tiny_model(family)
    hm.model.config._attn_implementation = attention
    assert fast_supported(hm)
    ids = Concept.parse("words:good,great").token_ids(hm.tokenizer)
    for site in SITES:
        width = hm.site_size(site)
        neurons = torch.tensor([0, 3, width - 1, 3])
        values = torch.tensor([4.0, -2.0, 1.5, 0.0])
        slow = concept_probability(hm, TEXTS, ids, site, neurons, values, batch_size=5, positions=positions, fast=False)
        fast = concept_probability(hm, TEXTS, ids, site, neurons, values, batch_size=1, positions=positions, fast=True)
        assert torch.allclose(fast, slow, rtol=1e-4, atol=1e-7), (site, (fast - slow).abs().max())
    plain_slow = concept_probability(hm, TEXTS, ids, "L1.mlp_act", positions=positions, fast=False)
    plain_fast = concept_probability(hm, TEXTS, ids, "L1.mlp_act", positions=positions, fast=True)
    assert torch.allclose(plain_fast, plain_slow, rtol=1e-4, atol=1e-7)


def test_unsupported_families_fall_back_and_the_planted_neuron_stands_out():
    gpt2 = tiny_model("gpt2")
    assert not fast_supported(gpt2)
    ids = Concept.parse("words:good").token_ids(gpt2.tokenizer)
    probs = concept_probability(gpt2, TEXTS[:3], ids, "L1.mlp_act", torch.tensor([1, 2]), torch.tensor([1.0, 2.0]))
    assert probs.shape == (2, 3)
    hm = planted_neuron_model()
    acts, _ = site_activations(hm, "L0.mlp_act", TEXTS)
    for positions in ("last", "all"):
        effects = interventional_scores(hm, "L0.mlp_act", NEURON, Concept.parse("words:good,great"), TEXTS, acts,
                                        n_random=10, positions=positions)
        assert effects.iloc[0]["effect"] > 5 * effects.iloc[1:]["effect"].abs().max()
    with pytest.raises(ValueError, match="positions='first'"):
        concept_probability(hm, TEXTS, ids, "L0.mlp_act", positions="first")
