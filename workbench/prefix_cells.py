"""Layer x position sweep cells with a shared, cached prefix.

In a causal model, patching position p changes nothing at positions < p, in any layer. So all
cells that patch position p share the base's keys and values for tokens 0..p-1: compute them once
(a KV cache of the p-token prefix, repeated over the batch), then run only tokens p..T-1. With
the LM head applied to the last token alone, a sweep does about half the arithmetic of one full
forward per cell, on top of batching many cells per forward.

Since layer stepping (`workbench.layer_steps`, which also skips the layers below each cell) this
is the fallback for causal families it does not serve: GPT-NeoX, Gemma2/Gemma3 (soft-capped
logits, per-layer rotary tables), and attention implementations other than eager/SDPA;
``patch_sweep(..., path="prefix")`` asks for it by name.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch

from .hooked import HookedModel
from .hooks import add_hook, hooks_installed, scatter_
from .metrics import Metric
from .positions import Positions
from .sites import Site


def supports_prefix_cache(hm: HookedModel) -> bool:
    """Causal decoders whose forward takes a KV cache (every supported family but BERT/RoBERTa)."""
    params = inspect.signature(hm.model.forward).parameters
    return hm.layout.adapter.causal and ("cache" in params or "past_key_values" in params)


def _cache_kwarg(hm: HookedModel) -> str:
    # transformers 5 names it `cache` (`past_key_values` is a deprecated alias).
    return "cache" if "cache" in inspect.signature(hm.model.forward).parameters else "past_key_values"


def last_token_kwargs(hm: HookedModel) -> dict:
    """Ask for logits at the last position only, where the model supports it."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(hm.model.forward).parameters else {}


@torch.no_grad()
def run_position_cells(hm: HookedModel, base_batch: dict, cells: list[tuple[int, int]],
                       site_of_layer: Callable[[int], Site], source_state: Callable[[int, int], torch.Tensor],
                       metric: Metric, batch_size: int) -> list[float]:
    """Metric value of each (layer, position) cell: the base with that one state patched.

    ``source_state(layer, position)`` gives the (d,) state written there. The metric sees the
    last position's logits (n, 1, V) and an all-ones mask (n, 1).
    """
    ids = base_batch["input_ids"]  # (1, T)
    n_tokens = ids.shape[1]
    values: dict[int, float] = {}
    by_position: dict[int, list[int]] = {}
    for row, (_, position) in enumerate(cells):
        by_position.setdefault(position, []).append(row)
    cache_kwarg, keep = _cache_kwarg(hm), last_token_kwargs(hm)
    for position, rows in sorted(by_position.items()):
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            n = len(chunk)
            kwargs = dict(input_ids=ids[:, position:].expand(n, -1),  # (n, T - p)
                          attention_mask=torch.ones(n, n_tokens, dtype=torch.long, device=ids.device),
                          position_ids=torch.arange(position, n_tokens, device=ids.device).expand(n, -1),
                          use_cache=True, **keep)
            if position > 0:
                prefix = hm.model(input_ids=ids[:, :position], use_cache=True)
                cache = prefix[cache_kwarg] if cache_kwarg in prefix else prefix["past_key_values"]
                cache.batch_repeat_interleave(n)  # (n, heads, p, head_dim) per layer
                kwargs[cache_kwarg] = cache
            layers = [cells[r][0] for r in chunk]
            installers = []
            for layer in sorted(set(layers)):
                point = hm.layout.hook_point(site_of_layer(layer))
                mask = torch.tensor([l == layer for l in layers], device=ids.device)[:, None]  # (n, 1)
                where = Positions(torch.zeros(n, 1, dtype=torch.long, device=ids.device), mask)
                state = source_state(layer, position).to(ids.device)  # (d,)
                new = state.expand(n, 1, -1)  # (n, 1, d)

                def patch(hidden, point=point, where=where, new=new):
                    scatter_(hidden, point, where, new)
                installers.append(lambda point=point, patch=patch: add_hook(point.module, point.kind, patch))
            with hooks_installed(installers):
                logits = hm.model(**kwargs).logits[:, -1:]  # (n, 1, V)
            ones = torch.ones(n, 1, dtype=torch.long, device=ids.device)
            for row, value in zip(chunk, metric(logits, {"attention_mask": ones}).float().tolist()):
                values[row] = value
    return [values[row] for row in range(len(cells))]
