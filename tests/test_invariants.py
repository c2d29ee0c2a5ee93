"""DESIGN.md invariants: identity plans are bit-exact, padding changes nothing, hooks never leak."""

import pytest
import torch

from workbench import AddVector, COMPONENTS, Collect, Intervention, Patch, PlanItem, Site, ZeroAblation
from conftest import tiny_model, FAMILIES, DECODERS

TEXTS = ["the cat sat on the mat", "I thought the movie was great , I loved it", "Paris is in"]


def plain_logits(hm, texts):
    batch = hm.tokenize(texts)
    with torch.no_grad():
        return hm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def no_hooks_left(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("family", FAMILIES)
def test_empty_plan_is_bit_identical(family):
    hm = tiny_model(family)
    text = TEXTS[1]
    with torch.no_grad():
        assert torch.equal(hm.run(text, []), plain_logits(hm, text))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_patch_with_source_equal_to_base_is_bit_identical(family, component):
    hm = tiny_model(family)
    text = TEXTS[1]
    plan = [PlanItem(Site(1, component), "all", Patch()), PlanItem(Site(0, component), [0, -1], Patch())]
    with torch.no_grad():
        patched = hm.run(text, plan, sources=[text])
        changed = hm.run(text, [PlanItem(Site(1, component), "all", ZeroAblation())])
    assert torch.equal(patched, plain_logits(hm, text))
    assert not torch.equal(changed, patched)  # the same sites do move the output
    assert no_hooks_left(hm.model)


@pytest.mark.parametrize("family", FAMILIES)
def test_head_patch_from_itself_and_collect_are_identity(family):
    hm = tiny_model(family)
    collect = Collect()
    plan = [PlanItem("L2.head1.z", "all", Patch()), PlanItem("L1.resid_post", "l1", collect)]
    with torch.no_grad():
        assert torch.equal(hm.run(TEXTS[0], plan, sources=TEXTS[0]), plain_logits(hm, TEXTS[0]))
    assert collect.values[0].shape == (1, 1, 32)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batches_equal_unbatched_runs(family, side):
    hm = tiny_model(family)
    steer = AddVector(torch.linspace(-1, 1, 32), scale=3.0)
    plan = [PlanItem("L1.resid_post", "f1+l1", steer), PlanItem("L0.mlp_out", [-2], Patch())]
    sources = ["the dog sat on a mat", "I hated the movie , it was awful , I hated it", "Rome is in"]
    batch = hm.tokenize(TEXTS, padding_side=side)
    source_batch = hm.tokenize(sources, padding_side="left" if side == "right" else "right")
    with torch.no_grad():
        batched = hm.run(batch, plan, sources=[source_batch])
        for i, (text, source) in enumerate(zip(TEXTS, sources)):
            alone = hm.run(text, plan, sources=[source])[0]  # (T_i, V)
            real = batch["attention_mask"][i].bool()
            torch.testing.assert_close(batched[i][real], alone, atol=1e-5, rtol=1e-5)


class Boom(Intervention):
    def forward(self, base, source=None):
        raise RuntimeError("boom")


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_no_hook_survives_a_failing_run(family):
    hm = tiny_model(family)
    before = plain_logits(hm, TEXTS[0])
    with pytest.raises(RuntimeError, match="boom"):
        hm.run(TEXTS[0], [PlanItem("L1.resid_post", "l1", AddVector(torch.ones(32))),
                          PlanItem("L2.mlp_act", "all", Boom())])
    assert no_hooks_left(hm.model)
    assert torch.equal(plain_logits(hm, TEXTS[0]), before)
    with pytest.raises(RuntimeError, match="boom"):
        with hm.intervene([PlanItem("L0.attn_out", "all", Boom())]):
            hm.forward(TEXTS[0])
    assert no_hooks_left(hm.model)


def test_cache_matches_output_hidden_states():
    hm = tiny_model("llama")
    batch = hm.tokenize(TEXTS[:2])
    acts = hm.cache(batch, ["L0.resid_pre", "L1.resid_post", "L2.resid_post"])
    with torch.no_grad():
        states = hm.model(**batch, output_hidden_states=True).hidden_states
    real = batch["attention_mask"].bool()  # padded slots differ: we give them clamped position ids
    assert torch.equal(acts[Site(0, "resid_pre")][real], states[0][real])
    assert torch.equal(acts[Site(1, "resid_post")][real], states[2][real])
    # HF applies the final norm to its last hidden state; ours is the raw block output
    assert acts[Site(2, "resid_post")].shape == states[3].shape


@pytest.mark.parametrize("family", DECODERS)
def test_patching_the_whole_source_residual_reproduces_the_source(family):
    hm = tiny_model(family)
    base, source = "the cat sat on the mat", "a dog sat on a cat"
    with torch.no_grad():
        patched = hm.run(base, [PlanItem("L0.resid_pre", "all", Patch())], sources=[source])
    torch.testing.assert_close(patched, plain_logits(hm, source), atol=1e-6, rtol=1e-6)
