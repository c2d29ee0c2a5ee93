"""Bad input gets an error that names the value, the valid range and the fix."""

import pytest
import torch
import transformers

from workbench import AddVector, HookedModel, Patch, PlanItem, Site
from workbench.sweeps import patch_sweep, single_token_id
from conftest import tiny_model


@pytest.fixture
def hm():
    return tiny_model("llama")


def test_layer_out_of_range(hm):
    with pytest.raises(ValueError, match=r"layer 7 out of range; the model has 3 layers \(0-2\)"):
        hm.run("the cat", [PlanItem("L7.resid_post", "l1", AddVector(torch.ones(32)))])
    with pytest.raises(ValueError, match=r"head 9 out of range.*4 heads \(0-3\)"):
        hm.run("the cat", [PlanItem("L1.head9.z", "l1", Patch())], sources=["a dog"])


def test_unknown_component():
    with pytest.raises(ValueError, match=r"unknown component 'resid_mid'; expected one of"):
        Site(1, "resid_mid")
    with pytest.raises(ValueError, match="unknown component 'mlp'"):
        PlanItem("L1.mlp", "l1", Patch())


def test_position_beyond_the_sequence(hm):
    with pytest.raises(IndexError, match=r"position \[5\] is beyond the sequence: example 0 has 2 tokens"):
        hm.run("the cat", [PlanItem("L1.resid_post", [5], AddVector(torch.ones(32)))])


def test_source_batch_size_differs(hm):
    with pytest.raises(ValueError, match="source batch size 2 differs from the base's 3"):
        hm.run(["the cat", "a dog", "the mat"], [PlanItem("L1.resid_post", "l1", Patch())],
               sources=[["the cat", "a dog"]])


def test_missing_source(hm):
    with pytest.raises(ValueError, match="pass sources="):
        hm.run("the cat", [PlanItem("L1.resid_post", "l1", Patch())])


def test_intervention_hidden_size_differs(hm):
    with pytest.raises(ValueError, match=r"AddVector at L1.resid_post has hidden size 16, but the site has 32"):
        hm.run("the cat", [PlanItem("L1.resid_post", "l1", AddVector(torch.ones(16)))])
    with pytest.raises(ValueError, match=r"site has 48"):  # neurons: the MLP width
        hm.run("the cat", [PlanItem("L1.mlp_act", "l1", AddVector(torch.ones(32)))])


def test_unsupported_architecture():
    config = transformers.OPTConfig(hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                                    vocab_size=50, word_embed_proj_dim=16)
    with pytest.raises(ValueError, match=r"unsupported architecture: model_type 'opt'.*GPT-2.*Llama.*ADAPTERS"):
        HookedModel(transformers.OPTForCausalLM(config))


def test_target_must_be_one_token(hm):
    with pytest.raises(ValueError, match=r"'the cat' is 2 tokens"):
        single_token_id(hm, "the cat")


def test_sweep_needs_equal_lengths(hm):
    with pytest.raises(ValueError, match="base has 2, source has 3"):
        patch_sweep(hm, "the cat", "the cat sat", target="dog", foil="cat")


def test_empty_prompt(hm):
    with pytest.raises(ValueError, match="empty input"):
        hm.run("", [])
