"""The fused head + loss (workbench.linear_cross_entropy) against torch's cross_entropy on
materialized logits, and ReftModel's fused training path against its plain one."""

import pytest
import torch
from torch.nn.functional import cross_entropy

from conftest import DECODERS, tiny_model
from reft import ReftConfig, get_reft_model
from workbench.linear_cross_entropy import PLAIN_HEADS, fusable_head, linear_cross_entropy


def _case(dtype, n=13, d=8, v=37, bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=gen, dtype=dtype).requires_grad_(True)
    weight = torch.randn(v, d, generator=gen, dtype=dtype)
    b = torch.randn(v, generator=gen, dtype=dtype) if bias else None
    return hidden, weight, b, torch.randint(0, v, (n,), generator=gen)


@pytest.mark.parametrize("chunk_bytes", [1, 4 * 37 * 5, 1 << 30])  # one row, 5 rows and one chunk per call
@pytest.mark.parametrize("bias", [True, False])
def test_equals_cross_entropy_on_materialized_logits_fp64(chunk_bytes, bias):
    hidden, weight, b, targets = _case(torch.float64, bias=bias)
    ref_hidden = hidden.detach().clone().requires_grad_(True)
    fused = linear_cross_entropy(hidden, weight, b, targets, chunk_bytes=chunk_bytes)
    plain = cross_entropy(torch.nn.functional.linear(ref_hidden, weight, b), targets)
    fused.backward()
    plain.backward()
    assert fused.dtype == torch.float64  # fp64 stays fp64 (only half precision is upcast)
    assert torch.allclose(fused, plain, rtol=0, atol=1e-13)
    assert torch.allclose(hidden.grad, ref_hidden.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_divisor_gives_the_sum_over_that_count(as_tensor):
    hidden, weight, b, targets = _case(torch.float32)
    divisor = torch.tensor(40) if as_tensor else 40
    fused = linear_cross_entropy(hidden, weight, b, targets, divisor=divisor)
    plain = cross_entropy(hidden.detach() @ weight.T + b, targets, reduction="sum") / 40
    assert torch.allclose(fused, plain, atol=1e-6)


def test_bf16_follows_the_plain_path_that_upcasts_the_logits():
    hidden, weight, b, targets = _case(torch.bfloat16, n=64, d=32, v=300)
    ref_hidden = hidden.detach().clone().requires_grad_(True)
    fused = linear_cross_entropy(hidden, weight, b, targets)
    plain = cross_entropy(torch.nn.functional.linear(ref_hidden, weight, b).float(), targets)
    fused.backward()
    plain.backward()
    assert fused.dtype == torch.float32 and hidden.grad.dtype == torch.bfloat16
    assert torch.allclose(fused, plain, atol=1e-5)
    assert torch.equal(hidden.grad, ref_hidden.grad)  # same fp32 softmax grad, same cast, same bf16 matmul


def test_bad_inputs_name_the_problem():
    hidden, weight, b, targets = _case(torch.float32)
    with pytest.raises(ValueError, match="requires_grad=False"):
        linear_cross_entropy(hidden, weight.requires_grad_(True), b, targets)
    weight.requires_grad_(False)
    with pytest.raises(ValueError, match=r"\(N, d\) and targets \(N,\)"):
        linear_cross_entropy(hidden, weight, b, targets[:3])
    with pytest.raises(ValueError, match="N = 0"):
        linear_cross_entropy(hidden[:0], weight, b, targets[:0])


def _reft(family, dtype=torch.float32):
    hm = tiny_model(family)
    hm.model.to(dtype)
    torch.manual_seed(1)
    return get_reft_model(hm, ReftConfig(layers=(0, 2), rank=2, positions="f1+l1", tied=False))


def _batch():
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(3, 60, (3, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # one left-padded row
    labels = ids.clone()
    labels[:, :4] = -100
    return dict(input_ids=ids, attention_mask=mask, labels=labels, prompt_lengths=torch.tensor([2, 4, 4]))


def _loss_and_grads(reft, fused):
    reft.fused_loss = fused
    reft.zero_grad(set_to_none=True)
    out = reft(**_batch())
    out.loss.backward()
    return out, [p.grad for p in reft.parameters() if p.requires_grad]


@pytest.mark.parametrize("family", DECODERS)
def test_reft_training_loss_and_gradients_equal_the_plain_path(family):
    reft = _reft(family)
    fused_out, fused_grads = _loss_and_grads(reft, True)
    plain_out, plain_grads = _loss_and_grads(reft, False)
    assert plain_out.logits is not None
    if reft.base_model.config.model_type in PLAIN_HEADS:
        assert fused_out.logits is None  # the (N, V) logits were never kept
    else:  # soft-capped heads (Gemma 2/3) keep the plain path
        assert fusable_head(reft.base_model) is None and fused_out.logits is not None
    assert torch.allclose(fused_out.loss, plain_out.loss, atol=2e-6)
    for f, p in zip(fused_grads, plain_grads):
        assert torch.allclose(f, p, rtol=1e-5, atol=1e-7)


def test_evaluation_without_gradients_keeps_its_logits():
    reft = _reft("llama")
    with torch.no_grad():
        out = reft(**_batch())
    assert out.logits is not None and out.logits.shape == (15, reft.base_model.config.vocab_size)  # 3 rows x 5 labels


def _largest_saved(fn, module) -> int:
    """The most elements a tensor autograd keeps for the backward has over one call of fn, the
    module's own weights (saved by reference, no memory) left out."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    sizes = []

    def pack(t):
        if t.untyped_storage().data_ptr() not in weights:
            sizes.append(t.numel())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return max(sizes)


def test_the_fused_path_keeps_no_logits_for_the_backward():
    """A vocabulary large enough that N x V exceeds every activation, as in real models."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from workbench import HookedModel
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=4096, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    reft = get_reft_model(HookedModel(LlamaForCausalLM(config).eval(), None),
                          ReftConfig(layers=(0, 2), rank=2, positions="f1+l1", tied=False))
    n, vocab = 15, config.vocab_size
    reft.fused_loss = False
    assert _largest_saved(lambda: reft(**_batch()).loss, reft) >= n * vocab
    reft.fused_loss = True
    assert _largest_saved(lambda: reft(**_batch()).loss, reft) < n * vocab


def test_trained_or_offloaded_heads_are_not_fused():
    hm = tiny_model("llama")
    hm.model.requires_grad_(False)  # frozen, as get_reft_model leaves it
    assert fusable_head(hm.model) is hm.model.lm_head
    hm.model.lm_head.weight.requires_grad_(True)
    assert fusable_head(hm.model) is None
    meta = tiny_model("llama").model.to("meta")
    assert fusable_head(meta) is None
