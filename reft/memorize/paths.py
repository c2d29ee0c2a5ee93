"""The frozen model's forward for memorization, two ways with the same result.

Every training step feeds the same input, and one intervention edits one token (position q) at
the output of one layer L. ``NaiveForward`` runs the whole hooked model each step (the reference).
``CachedForward`` computes once what cannot change and recomputes only what can:

* the residual stream after layer L at positions >= q (positions > q are untouched by the edit,
  and the edit at q needs only h_q): cached, so layers 0..L never run again;
* keys/values of positions < q in layers > L (causal attention: they never see position q):
  computed once as a KV cache that each step's fresh ``DynamicCache`` starts from;
* each step: ``x = [intervention(h_q), h_{q+1:}]`` runs through layers L+1.. with the real HF
  decoder modules, then the final norm and the LM head on the N predicting positions only.

Both return logits (K, N, V) at the positions that predict the N target tokens; the loss and
gradients agree to float rounding (tests/test_memorization_paths.py).

>>> fast = CachedForward(hm, task, layer=15)                        # doctest: +SKIP
>>> loss = memorization_loss(fast.logits(ConsReFT(576, 1)), task.target_ids)  # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import cross_entropy

from workbench import orthogonal
from workbench.hooked import HookedModel
from workbench.plan import PlanItem
from workbench.positions import Indices
from workbench.sites import Site

from .targets import MemorizationTask

FAST_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")  # decoder layers called directly (Llama layout)
PATHS = ("auto", "fast", "naive")


def memorization_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of logits (K, N, V) against targets (K, N), in float32."""
    return cross_entropy(logits.float().flatten(0, 1), targets.to(logits.device).flatten())  # scalar


def _prompt_position(task: MemorizationTask, position: int) -> int:
    p = task.prompt_length
    if not -p <= position < p:
        raise IndexError(f"position {position} out of range: the key has {p} tokens (valid 0..{p - 1} or "
                         f"-{p}..-1); use -1 for its last token")
    return position % p


def _check_layer(hm: HookedModel, layer: int) -> None:
    if not 0 <= layer < hm.n_layers:
        raise ValueError(f"layer {layer} out of range; the model has {hm.n_layers} layers (0-{hm.n_layers - 1}); "
                         f"use a layer in that range")


class NaiveForward:
    """Reference path: the full hooked model each step, the intervention on ``L<layer>.resid_post``."""

    name = "naive"

    def __init__(self, hm: HookedModel, task: MemorizationTask, layer: int, position: int = -1) -> None:
        _check_layer(hm, layer)
        self.hm, self.task, self.layer = hm, task, layer
        self.position = _prompt_position(task, position)
        self.input_ids = task.input_ids().to(hm.device)  # (K, T)

    def logits(self, intervention: nn.Module) -> torch.Tensor:
        """Logits (K, N, V) predicting the target tokens."""
        plan = [PlanItem(Site(self.layer, "resid_post"), Indices([self.position]), intervention)]
        batch = {"input_ids": self.input_ids, "attention_mask": torch.ones_like(self.input_ids)}
        with orthogonal.cached(), self.hm.intervene(plan):
            return self.hm.model(**batch, use_cache=False, logits_to_keep=self.task.n_tokens).logits  # (K, N, V)


def _mask_kind(config, index: int) -> str:
    types = getattr(config, "layer_types", None)
    if types is not None:
        return types[index]
    if getattr(config, "model_type", "") == "mistral" and getattr(config, "sliding_window", None):
        return "sliding_attention"
    return "full_attention"


class CachedForward:
    """Fast path: cached states below and before the edit; only layers > L at positions >= q run.

    Supports the Llama-layout families in ``FAST_FAMILIES`` (block list ``layers``, ``rotary_emb``,
    ``norm``, ``lm_head``); ``make_forward(path="auto")`` falls back to ``NaiveForward`` elsewhere.
    """

    name = "fast"

    def __init__(self, hm: HookedModel, task: MemorizationTask, layer: int, position: int = -1) -> None:
        from transformers import DynamicCache
        from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

        _check_layer(hm, layer)
        model_type = getattr(hm.model.config, "model_type", None)
        if model_type not in FAST_FAMILIES:
            raise ValueError(f"the cached memorization path supports model types {FAST_FAMILIES}, got "
                             f"{model_type!r}; use path='naive' (or 'auto', which falls back to it)")
        self.hm, self.task, self.layer = hm, task, layer
        self.position = q = _prompt_position(task, position)
        self.config = config = hm.model.config
        self.base = base = hm.model.base_model
        self._cache_class = DynamicCache
        ids = task.input_ids().to(hm.device)  # (K, T)
        with torch.no_grad():
            hidden = hm.cache({"input_ids": ids}, [Site(layer, "resid_post")])[Site(layer, "resid_post")]  # (K, T, d)
            self.edited = hidden[:, q:q + 1].clone()  # (K, 1, d): h_q, the only input of the edit
            self.rest = hidden[:, q + 1:].clone()  # (K, T - q - 1, d): fixed for every step
            self.prefix: list[tuple[torch.Tensor, torch.Tensor]] = []
            if q > 0:  # keys/values of positions < q, all layers (layers <= L only give the cache its length)
                cache = DynamicCache(config=config)
                base(input_ids=ids[:, :q], cache=cache, use_cache=True)
                self.prefix = [(lay.keys.detach(), lay.values.detach()) for lay in cache.layers]
            steps = hidden.shape[1] - q
            self.position_ids = torch.arange(q, q + steps, device=ids.device)[None].expand(ids.shape[0], -1)  # (K, S)
            probe = hidden[:, q:]  # (K, S, d): shapes and dtype for the masks and rotary tables
            self.position_embeddings = base.rotary_emb(probe, position_ids=self.position_ids)  # (cos, sin)
            mask_args = dict(config=config, inputs_embeds=probe, attention_mask=None,
                             cache=self._fresh_cache(), position_ids=self.position_ids)
            builders = {"full_attention": create_causal_mask, "sliding_attention": create_sliding_window_causal_mask}
            kinds = {_mask_kind(config, i) for i in range(layer + 1, hm.n_layers)}
            masks = {kind: builders[kind](**mask_args) for kind in kinds}
            self.masks = [masks.get(_mask_kind(config, i)) for i in range(hm.n_layers)]

    def _fresh_cache(self):
        """A DynamicCache holding only the fixed prefix; each step appends to its own copy."""
        if not self.prefix:
            return None
        cache = self._cache_class(config=self.config)
        for index, (keys, values) in enumerate(self.prefix):
            cache.update(keys, values, index)  # (K, heads, q, head_dim) each
        return cache

    def logits(self, intervention: nn.Module) -> torch.Tensor:
        """Logits (K, N, V) predicting the target tokens."""
        with orthogonal.cached():
            edited = intervention(self.edited)  # (K, 1, d)
        x = torch.cat([edited, self.rest], dim=1)  # (K, S, d), S = T - q
        cache = self._fresh_cache()
        for index in range(self.layer + 1, self.hm.n_layers):
            x = self.base.layers[index](x, attention_mask=self.masks[index], position_ids=self.position_ids,
                                        position_embeddings=self.position_embeddings, cache=cache,
                                        use_cache=cache is not None)  # (K, S, d)
        x = self.base.norm(x[:, -self.task.n_tokens:])  # (K, N, d)
        return self.hm.model.lm_head(x)  # (K, N, V)


def make_forward(hm: HookedModel, task: MemorizationTask, layer: int, position: int = -1, path: str = "auto"):
    """The fast path where the family supports it (``auto``), or the one named.

    >>> make_forward(hm, task, layer=15).name                          # doctest: +SKIP
    'fast'
    """
    if path not in PATHS:
        raise ValueError(f"path {path!r}: expected one of {PATHS}")
    fast_ok = getattr(hm.model.config, "model_type", None) in FAST_FAMILIES
    if path == "fast" or (path == "auto" and fast_ok):
        return CachedForward(hm, task, layer, position)
    return NaiveForward(hm, task, layer, position)
