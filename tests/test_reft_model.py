"""ReFT interventions and models: formulas, the bit-exact identity, dtype, parameter counts, errors."""

from __future__ import annotations

import pytest
import torch
import transformers

from conftest import FAMILIES, tiny_model, word_tokenizer
from reft import ConsReFT, DiReFT, LoReFT, PerPositionGroups, ReftConfig, get_reft_model
from workbench import HookedModel


def learnable_llama(seed: int = 0) -> HookedModel:
    """A tiny random Llama whose logits can move (initializer_range 0.2: with the default 0.02 the
    logits of a d=32 model cannot leave the uniform distribution, whatever the intervention)."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      initializer_range=0.2)
    config._attn_implementation = "eager"
    return HookedModel(transformers.LlamaForCausalLM(config).eval(), word_tokenizer(), name="learnable-llama")


def batch_of(hm, texts):
    return hm.tokenize(texts)


# ---- formulas -----------------------------------------------------------------------------
def test_loreft_formula_and_identity():
    torch.manual_seed(0)
    edit = LoReFT(16, 4)
    base = torch.randn(3, 2, 16)  # (B, k, d)
    R, W, b = edit.rotation.weight, edit.learned_source.weight, edit.learned_source.bias
    expected = base + (base @ W.T + b - base @ R.T) @ R  # h + Rᵀ(W h + b − R h)
    assert torch.allclose(edit(base), expected, atol=1e-6)
    assert not torch.allclose(edit(base), base)  # a fresh LoReFT is not the identity
    edit.set_identity()
    assert torch.equal(edit(base), base)  # bit-exact
    relu = LoReFT(16, 4, activation="relu")
    R, W, b = relu.rotation.weight, relu.learned_source.weight, relu.learned_source.bias
    assert torch.allclose(relu(base), base + (torch.relu(base @ W.T + b) - base @ R.T) @ R, atol=1e-6)


def test_direft_and_consreft_formulas():
    torch.manual_seed(0)
    base = torch.randn(2, 3, 16)
    di = DiReFT(16, 4)
    W1, b, W2t = di.learned_source.weight, di.learned_source.bias, di.proj.weight  # W2ᵀ: (d, r)
    assert torch.allclose(di(base), base + (base @ W1.T + b) @ W2t.T, atol=1e-6)
    cons = ConsReFT(16, 2)
    with torch.no_grad():
        cons.learned_source.copy_(torch.tensor([1.5, -2.0]))
    out = cons(base)
    R = cons.rotation.weight
    assert torch.allclose(out, base + (cons.learned_source - base @ R.T) @ R, atol=1e-6)
    # input-independent: the subspace of R now holds b, whatever the input
    assert torch.allclose(out @ R.T, cons.learned_source.expand(2, 3, 2), atol=1e-5)


def test_dropout_acts_on_the_edit_only():
    edit = LoReFT(16, 2, dropout=0.9).set_identity()
    edit.train()
    base = torch.randn(4, 2, 16)
    assert torch.equal(edit(base), base)  # dropping parts of a zero edit changes nothing


@pytest.mark.parametrize("dtype, master", [(torch.float32, torch.float32), (torch.float64, torch.float64),
                                           (torch.bfloat16, torch.float32), (torch.float16, torch.float32)])
def test_parameters_follow_the_model_dtype(dtype, master):
    """Full-precision models: the model's dtype. Half precision: fp32 master values (Householder
    QR, AdamW state and the fp16 grad scaler need them), cast to the model's dtype when applied."""
    hm = tiny_model("llama")
    hm.model.to(dtype)
    reft = get_reft_model(hm, ReftConfig(layers=(1,), rank=2, positions="f1+l1"))
    assert {p.dtype for p in reft.parameters() if p.requires_grad} == {master}
    seen = []
    hook = reft.hm.layout.blocks[1].register_forward_hook(lambda m, a, out: seen.append(out[0].dtype if isinstance(out, tuple) else out.dtype))
    out = reft(**batch_of(hm, ["the cat sat"]))
    hook.remove()
    assert out.logits.dtype == dtype and seen == [dtype]  # the edited stream stays in the model's dtype


# ---- the identity on whole models ---------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("tied", [True, False])
def test_identity_leaves_logits_bit_identical(family, tied):
    hm = tiny_model(family)
    reft = get_reft_model(hm, ReftConfig(layers=(0, 2), rank=3, positions="f2+l1", tied=tied))
    for module in reft.modules():
        if isinstance(module, LoReFT):
            module.set_identity()
    batch = batch_of(hm, ["the cat sat on the mat", "I loved the movie , it was great"])
    with torch.no_grad():
        plain = hm.forward(batch, use_cache=False).logits  # (GPT-2: use_cache changes padded logits by ~4e-8)
        edited = reft(**batch).logits
    assert torch.equal(plain, edited)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in hm.model.modules())


def test_a_trained_edit_changes_only_positions_it_can_reach():
    hm = tiny_model("llama")
    reft = get_reft_model(hm, ReftConfig(layers=(1,), rank=2, positions="l1"))
    batch = batch_of(hm, ["the cat sat on the mat"])
    with torch.no_grad():
        plain, edited = hm.forward(batch, use_cache=False).logits, reft(**batch).logits
    assert torch.equal(plain[:, :-1], edited[:, :-1])  # causal: earlier tokens cannot see the last one
    assert not torch.allclose(plain[:, -1], edited[:, -1])


def test_prompt_positions_in_training_batches():
    """With prompt_lengths, 'l1' is the prompt's last token, not the sequence's."""
    hm = tiny_model("llama")
    reft = get_reft_model(hm, ReftConfig(layers=(1,), rank=2, positions="l1"))
    batch = batch_of(hm, ["the cat sat on the mat"])  # 6 tokens; prompt = first 3
    labels = batch["input_ids"].clone()
    labels[:, :3] = -100
    with torch.no_grad():
        plain = hm.forward(batch, use_cache=False).logits  # (1, 6, V)
        out = reft(**batch, labels=labels, prompt_lengths=torch.tensor([3]))
        full = reft.forward(**batch, prompt_lengths=torch.tensor([3])).logits  # no labels: all logits
    assert torch.equal(full[:, :2], plain[:, :2]) and not torch.allclose(full[:, 2], plain[:, 2])
    assert torch.allclose(out.logits, full[0, 2:5], atol=1e-6)  # logits only where a label follows (a smaller matmul)
    expected = torch.nn.functional.cross_entropy(full[0, 2:5], batch["input_ids"][0, 3:6])
    assert torch.allclose(out.loss, expected, atol=1e-6)


# ---- parameter counts ---------------------------------------------------------------------
@pytest.mark.parametrize("kind, per_group", [("loreft", lambda r, d: 2 * r * d + r),
                                             ("direft", lambda r, d: 2 * r * d + r),
                                             ("consreft", lambda r, d: r * d + r)])
def test_tied_and_untied_parameter_counts(kind, per_group):
    hm = tiny_model("llama")  # d = 32
    layers, r, d = (0, 2), 4, 32
    tied = get_reft_model(hm, ReftConfig(layers=layers, rank=r, kind=kind, positions="f3+l3", tied=True))
    untied = get_reft_model(hm, ReftConfig(layers=layers, rank=r, kind=kind, positions="f3+l3", tied=False))
    last_only = get_reft_model(hm, ReftConfig(layers=layers, rank=r, kind=kind, positions="l3", tied=False))
    assert tied.num_trainable_parameters() == len(layers) * per_group(r, d)
    assert untied.num_trainable_parameters() == 2 * len(layers) * per_group(r, d)
    assert last_only.num_trainable_parameters() == len(layers) * per_group(r, d)  # one group: nothing to untie
    assert isinstance(untied.intervention_at(2), PerPositionGroups)
    assert all(not p.requires_grad for p in hm.model.parameters())


def test_print_trainable_parameters(capsys):
    hm = tiny_model("llama")
    reft = get_reft_model(hm, ReftConfig(layers=(1,), rank=2, positions="f1+l1"))
    reft.print_trainable_parameters()
    base = sum(p.numel() for p in hm.model.parameters())
    text = capsys.readouterr().out
    assert f"trainable params: {2 * (2 * 2 * 32 + 2):,}" in text and f"{100 * 260 / base:.4f}" in text


# ---- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("config, message", [
    (dict(layers=(1,), rank=33), "rank 33 out of range at L1.resid_post: the site's hidden size is 32"),
    (dict(layers=(7,)), "layer 7 out of range; the model has 3 layers (0-2)"),
    (dict(layers=(1,), positions="f0+l0"), "select no tokens"),
    (dict(layers=(1,), component="resid_middle"), "unknown component 'resid_middle'"),
    (dict(layers=(1,), kind="noreft"), "unknown intervention kind 'noreft'"),
    (dict(layers=(1,), positions="all"), "first/last prompt tokens"),
    (dict(layers=()), "layers is empty"),
    (dict(layers=(1, 1)), "repeat a layer"),
    (dict(layers=(1,), activation="swish"), "unknown activation 'swish'"),
])
def test_bad_configs_name_the_value_and_the_fix(config, message):
    hm = tiny_model("llama")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_reft_model(hm, ReftConfig(**config))


def test_short_prompts_write_each_token_once_and_never_past_the_prompt():
    hm = tiny_model("llama")
    reft = get_reft_model(hm, ReftConfig(layers=(1,), rank=2, positions="f3+l3"))
    batch = batch_of(hm, ["the cat sat on the mat"])
    plan = reft.plan(torch.tensor([2]))  # a 2-token prompt, 3 first and 3 last slots
    pos = plan[0].positions.resolve(batch["input_ids"], batch["attention_mask"])
    written = pos.index[pos.mask].tolist()
    assert sorted(written) == [0, 1]  # each prompt token once, nothing past the prompt
    with torch.no_grad():
        plain = hm.forward(batch, use_cache=False).logits
        full = reft(**batch, prompt_lengths=torch.tensor([2])).logits
    assert not torch.allclose(full[:, 0], plain[:, 0]) and not torch.allclose(full[:, 1], plain[:, 1])
