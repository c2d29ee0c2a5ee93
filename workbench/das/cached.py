"""Cached base states for alignment training: layers below the site run once per example, ever.

The model is frozen, so everything at and below an intervention site depends only on the input.
DAS runs repeat the same base inputs every epoch; ``BaseStates`` runs them once and keeps, per
example, the residual stream entering the first layer that can change (N, T, d): after the site's
block for ``resid_post`` (= the next block's input), at the block's input for ``resid_pre``. A
step (``cached_logits``) takes the batch's rows of that cache, writes the intervention's output
at the site's positions with the same gather/scatter as the hooks, runs the remaining decoder
layers (the model's own modules, its rotary tables and mask builders), and applies the final norm
and the LM head on the last position only: no full-vocabulary logits anywhere.

Its logits equal the hooked full forward's to float rounding (tests/test_das_training.py trains
both and compares losses and rotations). ``cached_base_unsupported`` says when the hooked path is
used instead (other families, other components, other attention kernels).

>>> states = BaseStates(hm, "L8.resid_post", data)                              # doctest: +SKIP
>>> logits = cached_logits(hm, "L8.resid_post", das, data, index, states, sources)  # doctest: +SKIP
"""

from __future__ import annotations

import torch

from ..hooked import HookedModel
from ..hooks import gather, scatter_
from ..interventions import Intervention
from ..positions import Indices, Positions
from ..sites import Site
from .data import CounterfactualData

CACHED_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")  # decoder layers take (x, mask, rotary, ids)
CACHED_COMPONENTS = ("resid_pre", "resid_post")  # a block boundary: the state is the next block's whole input


def cached_base_unsupported(hm: HookedModel, site: Site | str) -> str | None:
    """Why ``BaseStates`` cannot serve ``site`` of ``hm`` (None when it can)."""
    site, config = Site.parse(site), hm.model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in CACHED_FAMILIES:
        return f"model type {model_type!r} is not one of {CACHED_FAMILIES}"
    if site.component not in CACHED_COMPONENTS:
        return f"component {site.component!r} is inside a block (cached: {CACHED_COMPONENTS})"
    attention = getattr(config, "_attn_implementation", "eager")
    if attention not in ("eager", "sdpa"):
        return f"attention implementation {attention!r} (the cached path passes explicit masks: eager or sdpa)"
    if hm.layout.final_norm is None or not hasattr(hm.model.base_model, "rotary_emb"):
        return "the model lacks a final norm or a shared rotary_emb"
    return None


def _start_layer(site: Site) -> int:
    """The first block whose input the intervention can change."""
    return site.layer + 1 if site.component == "resid_post" else site.layer


def _mask_kind(config, index: int) -> str:
    types = getattr(config, "layer_types", None)
    if types is not None:
        return types[index]
    if getattr(config, "model_type", "") == "mistral" and getattr(config, "sliding_window", None):
        return "sliding_attention"
    return "full_attention"


class BaseStates:
    """The base inputs' residual stream entering block ``_start_layer(site)``, left-padded (N, T, d).

    ``lengths`` (N,) are the real token counts; row i holds example i's states in its last
    ``lengths[i]`` columns. Built in batches of ``batch_size`` with ``hm.cache`` (it stops after
    the site's block), stored on the site's device in the model's dtype.
    """

    def __init__(self, hm: HookedModel, site: Site | str, data: CounterfactualData, batch_size: int = 64) -> None:
        from ..padding import left_pad, pad_id_of

        self.site = site = Site.parse(site)
        reason = cached_base_unsupported(hm, site)
        if reason:
            raise ValueError(f"cannot cache base states at {site}: {reason}; use TrainConfig(cache_base=False)")
        self.start = _start_layer(site)
        # resid_post of the last block has no next block: its output itself is the cached state
        read = Site(site.layer, "resid_post") if site.component == "resid_post" else Site(site.layer, "resid_pre")
        self.lengths = torch.tensor([len(ids) for ids in data.base_ids], dtype=torch.long)  # (N,)
        width = int(self.lengths.max()) if len(data) else 0
        device = hm.device_of(site)
        self.states = torch.zeros(len(data), width, hm.site_size(site), dtype=hm.dtype, device=device)  # (N, T, d)
        pad = pad_id_of(hm, default=0)
        with torch.no_grad():
            for begin in range(0, len(data), batch_size):
                rows = data.base_ids[begin:begin + batch_size]
                hidden = hm.cache(left_pad(rows, pad), [read])[read]  # (b, T_b, d), left-padded
                self.states[begin:begin + len(rows), width - hidden.shape[1]:] = hidden.to(device)

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """States (B, T, d) of ``data[index]``, left-padded to the batch's longest, and its mask (B, T)."""
        lengths = self.lengths[index]  # (B,)
        width = int(lengths.max())
        states = self.states[index.to(self.states.device)][:, self.states.shape[1] - width:]  # (B, T, d), a copy
        columns = torch.arange(width)[None]  # (1, T)
        mask = (columns >= width - lengths[:, None]).long().to(states.device)  # (B, T): 1 = real token
        return states, mask


def cached_logits(hm: HookedModel, site: Site | str, intervention: Intervention, data: CounterfactualData,
                  index: torch.Tensor, base: BaseStates, sources: torch.Tensor | None) -> torch.Tensor:
    """Next-token logits (B, V) of ``data[index]`` with ``intervention`` at ``site``, from ``base``.

    ``sources`` (N, k, d): cached source states at the site (None for source-free interventions).
    """
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    site, model, core = Site.parse(site), hm.model, hm.model.base_model
    config = model.config
    rows = index.tolist()
    x, mask = base.batch(index)  # (B, T, d), (B, T)
    positions: Positions = Indices([data.base_positions[i] for i in rows]).resolve(mask, mask, hm.tokenizer)
    point = hm.layout.hook_point(site)
    source = None if sources is None else sources[index.to(sources.device)]  # (B, k, d)
    new = intervention(gather(x, point, positions), source)  # (B, k, d)
    if not intervention.is_identity:
        scatter_(x, point, positions, new)  # x is this batch's own copy of the cache
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): as HookedModel.forward pads them
    with hm.lock:
        layers = range(base.start, hm.n_layers)
        if len(layers):
            rotary = core.rotary_emb(x, position_ids=position_ids)  # (cos, sin)
            builders = {"full_attention": create_causal_mask, "sliding_attention": create_sliding_window_causal_mask}
            masks = {}
            for i in layers:
                kind = _mask_kind(config, i)
                if kind not in masks:
                    masks[kind] = builders[kind](config=config, inputs_embeds=x, attention_mask=mask,
                                                 cache=None, position_ids=position_ids)
                x = core.layers[i](x, attention_mask=masks[kind], position_ids=position_ids,
                                   position_embeddings=rotary, cache=None, use_cache=False)  # (B, T, d)
        last = hm.layout.final_norm(x[:, -1])  # (B, d): left padding puts every last token in the last column
        return model.get_output_embeddings()(last)  # (B, V)
