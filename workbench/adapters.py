"""Per-architecture adapters: map a Site to the module whose input or output it is.

Each family is one small table of module paths. Adding a family is one `Adapter(...)` entry in
ADAPTERS: name the block list (relative to the model's base model) and, relative to one block,
the module whose *output* is attn_out / mlp_out and whose *input* is mlp_act / z.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .sites import Site


@dataclass(frozen=True)
class Adapter:
    """Module paths of one architecture family (dotted attribute paths)."""

    family: str
    model_types: tuple[str, ...]
    blocks: str  # block list, relative to `model.base_model`
    attn_out: str  # output of this module = attention's contribution to the residual stream
    mlp_out: str  # output of this module = MLP's contribution to the residual stream
    mlp_act: str  # input of this module = MLP neurons
    z: str  # input of this module = concatenated per-head attention outputs
    causal: bool = True  # decoder-only: a token never sees later tokens
    # the norm between the last block and the unembedding (logit lens, direct logit attribution);
    # None where the model has none at the stream's end (BERT's sits inside its MLM head)
    final_norm: str | None = "norm"


ADAPTERS: tuple[Adapter, ...] = (
    Adapter("GPT-2", ("gpt2",), "h", "attn.c_proj", "mlp.c_proj", "mlp.c_proj", "attn.c_proj", final_norm="ln_f"),
    Adapter(
        "Llama family (Llama, Mistral, Qwen2, Qwen3, SmolLM2)",
        ("llama", "mistral", "qwen2", "qwen3"),
        "layers", "self_attn.o_proj", "mlp.down_proj", "mlp.down_proj", "self_attn.o_proj",
    ),
    Adapter("Gemma", ("gemma",), "layers", "self_attn.o_proj", "mlp.down_proj", "mlp.down_proj",
            "self_attn.o_proj"),
    # Gemma 2/3 normalise each sub-block's output before adding it to the residual stream, so
    # what reaches the stream is the output of the post-norms, not of the projections.
    Adapter(
        "Gemma2/Gemma3", ("gemma2", "gemma3", "gemma3_text"), "layers",
        "post_attention_layernorm", "post_feedforward_layernorm", "mlp.down_proj", "self_attn.o_proj",
    ),
    Adapter("GPT-NeoX", ("gpt_neox",), "layers", "attention.dense", "mlp.dense_4h_to_h",
            "mlp.dense_4h_to_h", "attention.dense", final_norm="final_layer_norm"),
    # BERT is post-LN: the sub-block outputs below are added to the stream inside a LayerNorm.
    Adapter("BERT/RoBERTa", ("bert", "roberta"), "encoder.layer", "attention.output.dense",
            "output.dense", "output.dense", "attention.output.dense", causal=False, final_norm=None),
)


def supported_families() -> str:
    return "; ".join(f"{a.family} [model_type {', '.join(a.model_types)}]" for a in ADAPTERS)


def adapter_for(model: nn.Module) -> Adapter:
    """Find the adapter for a Hugging Face model by its ``config.model_type``.

    >>> adapter_for(transformers.GPT2LMHeadModel(transformers.GPT2Config())).family  # doctest: +SKIP
    'GPT-2'
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    raise ValueError(
        f"unsupported architecture: model_type {model_type!r} ({type(model).__name__}). "
        f"Supported families: {supported_families()}. To add one, append an Adapter entry to "
        f"workbench.adapters.ADAPTERS naming its block list and sub-module paths."
    )


def _get(module: nn.Module, path: str) -> nn.Module:
    for name in path.split("."):
        module = getattr(module, name)
    return module


def _in_features(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    return int(module.weight.shape[0])  # GPT-2's Conv1D stores its weight as (in, out)


@dataclass(frozen=True)
class HookPoint:
    """A resolved site: the module, whether the value is its input or output, and the width."""

    module: nn.Module
    kind: str  # "input" or "output"
    width: int  # size of the last dimension of the hooked tensor
    head_slice: slice | None  # channels of one head within `width`, for Site(..., "z", head=h)

    @property
    def size(self) -> int:
        """Hidden size an intervention at this site sees."""
        if self.head_slice is None:
            return self.width
        return self.head_slice.stop - self.head_slice.start


class ModelLayout:
    """Resolves sites for one model: validates layers and heads, finds modules and sizes."""

    def __init__(self, model: nn.Module) -> None:
        self.adapter = adapter_for(model)
        self.blocks: nn.ModuleList = _get(model.base_model, self.adapter.blocks)
        final = self.adapter.final_norm
        self.final_norm: nn.Module | None = _get(model.base_model, final) if final else None
        self.n_layers = len(self.blocks)
        config = model.config
        self.d_model = int(config.hidden_size)
        self.n_heads = int(config.num_attention_heads)

    def hook_point(self, site: Site) -> HookPoint:
        """Resolve a site, with errors that name the value and the valid range."""
        if not 0 <= site.layer < self.n_layers:
            raise ValueError(
                f"site {site}: layer {site.layer} out of range; the model has {self.n_layers} "
                f"layers (0-{self.n_layers - 1}); use a layer in that range (e.g. L{self.n_layers - 1})"
            )
        block = self.blocks[site.layer]
        a = self.adapter
        if site.component == "resid_pre":
            return HookPoint(block, "input", self.d_model, None)
        if site.component == "resid_post":
            return HookPoint(block, "output", self.d_model, None)
        if site.component in ("attn_out", "mlp_out"):
            return HookPoint(_get(block, getattr(a, site.component)), "output", self.d_model, None)
        if site.component == "mlp_act":
            module = _get(block, a.mlp_act)
            return HookPoint(module, "input", _in_features(module), None)
        module = _get(block, a.z)  # component "z"
        width = _in_features(module)
        if site.head is None:
            return HookPoint(module, "input", width, None)
        if not 0 <= site.head < self.n_heads:
            raise ValueError(
                f"site {site}: head {site.head} out of range; layer {site.layer} has "
                f"{self.n_heads} heads (0-{self.n_heads - 1}); use a head in that range, or 'L{site.layer}.z' for all"
            )
        head_dim = width // self.n_heads
        return HookPoint(module, "input", width, slice(site.head * head_dim, (site.head + 1) * head_dim))


def first_tensor(value: object) -> torch.Tensor:
    """The hidden-state tensor inside a module's output or input (a tensor or a tuple)."""
    return value if isinstance(value, torch.Tensor) else value[0]
