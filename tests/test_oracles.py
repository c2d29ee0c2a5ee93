"""Patching results checked against independent oracles.

Two oracles, neither sharing code with the workbench: a hand-written ``register_forward_hook``
patch on the Hugging Face module paths, and nnsight 0.8.1 (a separate library). Each test also
checks that the patch moved the logits, so that a patch that silently does nothing fails.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

from conftest import tiny_model
from workbench import PlanItem, Patch, Site

BASE = "the cat sat on the mat"  # 6 word tokens
SOURCE = "a dog sat in a city"  # 6 word tokens, so [1, -1] are the same slots in both
POSITIONS = [1, -1]
PATCH_FAMILIES = ("gpt2", "llama", "gpt_neox", "gemma2")
ATOL = 1e-6


# ---- the hand-written oracle: HF module paths, written here, not taken from workbench.adapters ----
def blocks_of(model: nn.Module, family: str) -> nn.ModuleList:
    if family == "gpt2":
        return model.transformer.h
    if family == "gpt_neox":
        return model.gpt_neox.layers
    return model.model.layers


def module_of(model: nn.Module, family: str, layer: int, component: str) -> nn.Module:
    """resid_post: the decoder block's output; mlp_out: the whole MLP sub-module's output.

    For Gemma2 the MLP is followed by a per-token RMSNorm before the residual add; patching the MLP
    output with the source's therefore yields the source's post-norm value at that token too, so
    the oracle may patch the MLP itself (a different module from the one the workbench hooks).
    """
    block = blocks_of(model, family)[layer]
    return {"resid_post": block, "mlp_out": block.mlp}[component]


def o_proj_of(model: nn.Module, family: str, layer: int) -> nn.Module:
    block = blocks_of(model, family)[layer]
    if family == "gpt2":
        return block.attn.c_proj
    if family == "gpt_neox":
        return block.attention.dense
    return block.self_attn.o_proj


def _first(value):
    return value if isinstance(value, torch.Tensor) else value[0]


def _replace_first(value, tensor):
    return tensor if isinstance(value, torch.Tensor) else (tensor, *value[1:])


def ids_of(tokenizer, text: str) -> torch.Tensor:
    return tokenizer(text, return_tensors="pt")["input_ids"]  # (1, T)


@torch.no_grad()
def oracle_output_patch(model, modules: list[nn.Module], base_ids, source_ids, index: list[int]):
    """Read each module's output on the source, then run the base with those slots replaced."""
    saved: dict[int, torch.Tensor] = {}

    def grab(i):
        def hook(_module, _args, output):
            saved[i] = _first(output)[:, index].detach().clone()  # (1, k, d)
        return hook

    handles = [m.register_forward_hook(grab(i)) for i, m in enumerate(modules)]
    try:
        model(input_ids=source_ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()

    def put(i):
        def hook(_module, _args, output):
            hidden = _first(output).clone()  # (1, T, d)
            hidden[:, index] = saved[i]
            return _replace_first(output, hidden)
        return hook

    handles = [m.register_forward_hook(put(i)) for i, m in enumerate(modules)]
    try:
        return model(input_ids=base_ids, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def oracle_head_patch(model, o_proj: nn.Module, head_dim: int, head: int, base_ids, source_ids,
                      index: list[int]):
    """Replace one head's channels of o_proj's input on the base by the source's."""
    channels = slice(head * head_dim, (head + 1) * head_dim)
    saved = {}

    def grab(_module, args):
        saved["z"] = args[0][:, index, channels].detach().clone()  # (1, k, head_dim)

    handle = o_proj.register_forward_pre_hook(grab)
    try:
        model(input_ids=source_ids, use_cache=False)
    finally:
        handle.remove()

    def put(_module, args):
        z = args[0].clone()  # (1, T, n_heads * head_dim)
        z[:, index, channels] = saved["z"]
        return (z, *args[1:])

    handle = o_proj.register_forward_pre_hook(put)
    try:
        return model(input_ids=base_ids, use_cache=False).logits
    finally:
        handle.remove()


def absolute(index: list[int], length: int) -> list[int]:
    return [i % length for i in index]


def assert_moved(patched: torch.Tensor, clean: torch.Tensor) -> None:
    assert not torch.allclose(patched, clean, atol=1e-4), "the patch left the logits unchanged"


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ---- workbench vs hand-written hooks ------------------------------------------------------------
@pytest.mark.parametrize("family", PATCH_FAMILIES)
@pytest.mark.parametrize("component", ["resid_post", "mlp_out"])
def test_patch_equals_hand_written_hook(family, component):
    hm = tiny_model(family)
    base_ids, source_ids = ids_of(hm.tokenizer, BASE), ids_of(hm.tokenizer, SOURCE)
    assert base_ids.shape == source_ids.shape
    index = absolute(POSITIONS, base_ids.shape[1])

    got = hm.run(BASE, [PlanItem(f"L1.{component}", POSITIONS, Patch())], sources=[SOURCE])
    want = oracle_output_patch(hm.model, [module_of(hm.model, family, 1, component)], base_ids,
                               source_ids, index)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    with torch.no_grad():
        clean = hm.model(input_ids=base_ids, use_cache=False).logits
    assert_moved(got, clean)
    assert no_hooks_left(hm.model)


@pytest.mark.parametrize("family", ("llama", "gpt2"))
def test_two_item_plan_equals_hand_written_hooks(family):
    """Two sites patched in one run (an earlier MLP and a later residual) against two oracle hooks."""
    hm = tiny_model(family)
    base_ids, source_ids = ids_of(hm.tokenizer, BASE), ids_of(hm.tokenizer, SOURCE)
    index = absolute([2], base_ids.shape[1])
    plan = [PlanItem("L0.mlp_out", [2], Patch()), PlanItem("L2.resid_post", [2], Patch())]
    got = hm.run(BASE, plan, sources=[SOURCE])
    modules = [module_of(hm.model, family, 0, "mlp_out"), module_of(hm.model, family, 2, "resid_post")]
    want = oracle_output_patch(hm.model, modules, base_ids, source_ids, index)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    with torch.no_grad():
        clean = hm.model(input_ids=base_ids, use_cache=False).logits
    assert_moved(got, clean)


@pytest.mark.parametrize("family", PATCH_FAMILIES)
@pytest.mark.parametrize("head", [0, 3])
def test_head_patch_equals_o_proj_pre_hook(family, head):
    hm = tiny_model(family)
    config = hm.model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    base_ids, source_ids = ids_of(hm.tokenizer, BASE), ids_of(hm.tokenizer, SOURCE)
    index = absolute(POSITIONS, base_ids.shape[1])

    got = hm.run(BASE, [PlanItem(Site(1, "z", head=head), POSITIONS, Patch())], sources=[SOURCE])
    want = oracle_head_patch(hm.model, o_proj_of(hm.model, family, 1), head_dim, head, base_ids,
                             source_ids, index)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    with torch.no_grad():
        clean = hm.model(input_ids=base_ids, use_cache=False).logits
    assert_moved(got, clean)
    # and patching a different head gives a different result (the head slice matters)
    other = hm.run(BASE, [PlanItem(Site(1, "z", head=(head + 1) % 4), POSITIONS, Patch())], sources=[SOURCE])
    assert not torch.allclose(other, got, atol=1e-4)
    assert no_hooks_left(hm.model)


# ---- workbench vs nnsight -----------------------------------------------------------------------
def nnsight_wrap(model: nn.Module, tokenizer):
    """Wrap a built HF model with nnsight 0.8.1 offline.

    ``TransformersModel`` accepts a pre-loaded module (it builds a pipeline around it, inferring the
    task); it replaces each submodule's ``forward`` in place, so it gets a deep copy and the
    workbench keeps an untouched model. The tokenizer is copied too (nnsight sets its padding side).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from nnsight.modeling.transformers import TransformersModel
    return TransformersModel(copy.deepcopy(model), task="text-generation",
                             tokenizer=copy.deepcopy(tokenizer))


def nnsight_module(wrapped, family: str, layer: int, component: str):
    """The nnsight envoy of the same HF module as `module_of` (mirrors the HF attribute paths)."""
    blocks = {"gpt2": lambda: wrapped.transformer.h, "gpt_neox": lambda: wrapped.gpt_neox.layers}.get(
        family, lambda: wrapped.model.layers)()
    block = blocks[layer]
    return block if component == "resid_post" else block.mlp


def nnsight_patch(wrapped, family, layer, component, base: str, source: str, index: list[int]):
    """The usual nnsight patch: save the source's activation in one trace, set it in another."""
    with torch.no_grad():
        with wrapped.trace(source):
            saved = nnsight_module(wrapped, family, layer, component).output[:, index].clone().save()
        with wrapped.trace(base):
            nnsight_module(wrapped, family, layer, component).output[:, index] = saved
            logits = wrapped.output.logits.save()
        with wrapped.trace(base):
            clean = wrapped.output.logits.save()
    return logits, clean


@pytest.mark.parametrize("family", PATCH_FAMILIES)
@pytest.mark.parametrize("component", ["resid_post", "mlp_out"])
def test_patch_equals_nnsight(family, component):
    hm = tiny_model(family)
    length = ids_of(hm.tokenizer, BASE).shape[1]
    wrapped = nnsight_wrap(hm.model, hm.tokenizer)
    want, nn_clean = nnsight_patch(wrapped, family, 1, component, BASE, SOURCE, absolute(POSITIONS, length))

    got = hm.run(BASE, [PlanItem(f"L1.{component}", POSITIONS, Patch())], sources=[SOURCE])
    torch.testing.assert_close(hm.run(BASE), nn_clean, atol=ATOL, rtol=0)  # same model, same input
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    assert_moved(got, nn_clean)
    assert no_hooks_left(hm.model)


@pytest.mark.slow
@pytest.mark.parametrize("site", ["L5.resid_post", "L5.mlp_out"])
def test_patch_equals_nnsight_on_smollm2(smollm2, site):
    """The real SmolLM2-135M, wrapped by nnsight from its prepared HF folder (offline)."""
    from workbench.models import cache_dir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from nnsight.modeling.transformers import TransformersModel

    folder = cache_dir() / "smollm2-135m"
    assert (folder / "config.json").exists(), f"prepared model missing at {folder}"
    wrapped = TransformersModel(str(folder), task="text-generation", dispatch=True, dtype=torch.float32)
    base, source = "The capital of France is Paris", "The capital of Italy is Rome"  # 6 tokens each
    length = len(smollm2.tokenizer(base)["input_ids"])
    assert len(smollm2.tokenizer(source)["input_ids"]) == length
    layer, component = int(site[1:].split(".")[0]), site.split(".")[1]
    index = absolute([3, -1], length)
    want, nn_clean = nnsight_patch(wrapped, "llama", layer, component, base, source, index)

    got = smollm2.run(base, [PlanItem(site, [3, -1], Patch())], sources=[source])
    torch.testing.assert_close(smollm2.run(base), nn_clean, atol=1e-5, rtol=0)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert_moved(got, nn_clean)
    assert no_hooks_left(smollm2.model)
