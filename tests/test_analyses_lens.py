"""Logit lens (bit-exact at the last layer) and direct logit attribution (terms add up to the
logit difference under the frozen-final-norm convention), on every family that has them."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from analyses.dla import direct_logit_attribution, head_outputs
from analyses.lens import decode, logit_lens
from workbench import Site

TEXT = "the cat sat on the mat and the dog"
DLA_FAMILIES = ("gpt2", "llama", "qwen2", "mistral", "gemma", "gpt_neox")


@pytest.mark.parametrize("family", ("gpt2", "llama", "qwen2", "gemma", "gemma2", "gpt_neox"))
def test_lens_at_the_last_layer_is_the_models_logits_bit_for_bit(family, one_thread):
    hm = tiny_model(family)
    if family == "gemma2":  # exercise the final soft-cap too (the tiny config's default is off)
        hm.model.config.final_logit_softcapping = 3.0
    last = Site(hm.n_layers - 1, "resid_post")
    states = hm.cache(TEXT, [last])[last]  # (1, T, d)
    logits = hm.forward(TEXT, use_cache=False).logits  # (1, T, V)
    assert torch.equal(decode(hm, states), logits)
    df = logit_lens(hm, TEXT, top_k=3, target="dog")
    final = df[df.layer == hm.n_layers - 1]
    assert final["top_tokens"].map(len).eq(3).all()
    top_ids = logits[0].argmax(-1).tolist()
    assert [t[0] for t in final["top_tokens"]] == [hm.tokenizer.decode([i]) for i in top_ids]
    assert (final["target_rank"] >= 0).all() and len(df) == hm.n_layers * len(TEXT.split())


def test_lens_of_a_head_is_its_write_through_the_output_projection(one_thread):
    hm = tiny_model("llama")
    z = hm.cache(TEXT, ["L1.z"])[Site(1, "z")]  # (1, T, W)
    proj = hm.model.model.layers[1].self_attn.o_proj
    hd = z.shape[-1] // hm.layout.n_heads
    by_hand = z[..., 2 * hd:3 * hd] @ proj.weight[:, 2 * hd:3 * hd].T  # (1, T, d), an oracle by slicing
    torch.testing.assert_close(head_outputs(hm, 1, z)[:, :, 2], by_hand)
    df = logit_lens(hm, TEXT, sites=["L1.head2.z"], top_k=1)
    expected = decode(hm, by_hand)[0].softmax(-1).max(-1).values
    torch.testing.assert_close(torch.tensor(df["top_prob"].to_numpy()), expected.double(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", DLA_FAMILIES)
def test_dla_terms_add_up_to_the_logit_difference(family, one_thread):
    hm = tiny_model(family)
    df = direct_logit_attribution(hm, [TEXT, "Paris is in the country of"], target="dog", foil="cat")
    for prompt, group in df.groupby("prompt"):
        total, logit_diff = group["dla"].sum(), group["logit_diff"].iloc[0]
        assert abs(logit_diff) > 1e-4  # (random GPT-NeoX weights are small: ~1e-3)
        assert total == pytest.approx(logit_diff, rel=1e-4, abs=1e-6), (family, prompt)
    heads = df[df.kind == "head"]
    assert len(heads) == 2 * hm.n_layers * hm.layout.n_heads
    assert heads["dla"].abs().max() > 0


def test_dla_head_term_matches_an_ablation_of_that_head_with_the_scale_frozen(one_thread):
    """Independent oracle: remove one head's write from the final residual by hand, apply the
    final norm with its scale frozen, and read the change of the logit difference."""
    hm = tiny_model("llama")
    df = direct_logit_attribution(hm, TEXT, target="dog", foil="cat")
    ids = hm.tokenizer(["dog", "cat"], add_special_tokens=False)["input_ids"]
    t, f = ids[0][0], ids[1][0]
    acts = hm.cache(TEXT, ["L2.z", "L2.resid_post"], positions=[-1])
    final = acts[Site(2, "resid_post")][0, 0]  # (d,)
    write = acts[Site(2, "z")][0, 0, 8:16] @ hm.model.model.layers[2].self_attn.o_proj.weight[:, 8:16].T  # head 1
    norm = hm.model.model.norm
    scale = norm.weight / (final.pow(2).mean() + norm.variance_epsilon).sqrt()
    W = hm.model.lm_head.weight
    oracle = float(((write * scale) @ (W[t] - W[f])).detach())
    assert float(df.loc[df.component == "L2.head1", "dla"].iloc[0]) == pytest.approx(oracle, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("family, call", [
    ("bert", lambda hm: logit_lens(hm, TEXT)),
    ("gemma2", lambda hm: direct_logit_attribution(hm, TEXT, "dog", "cat")),
    ("llama", lambda hm: logit_lens(hm, TEXT, sites=["L1.mlp_act"])),
    ("llama", lambda hm: logit_lens(hm, TEXT, top_k=0)),
])
def test_unsupported_inputs_get_clear_errors(family, call):
    with pytest.raises(ValueError, match=r"use|give"):
        call(tiny_model(family))


def test_lens_and_dla_in_bfloat16(one_thread):
    hm = tiny_model("llama")
    hm.model.to(torch.bfloat16)
    last = Site(hm.n_layers - 1, "resid_post")
    states = hm.cache(TEXT, [last])[last]
    assert states.dtype == torch.bfloat16
    assert torch.equal(decode(hm, states), hm.forward(TEXT, use_cache=False).logits)
    df = direct_logit_attribution(hm, TEXT, target="dog", foil="cat")
    # the terms are summed in float32 from bf16 states; the model's logits are rounded to bf16
    assert df["dla"].sum() == pytest.approx(df["logit_diff"].iloc[0], abs=0.01)  # the difference is ~0.2
