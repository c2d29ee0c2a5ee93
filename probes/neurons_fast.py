"""Concept probabilities under neuron settings, running only the layers above the site.

`interventional_scores` sets each tested neuron high and low (M settings) on every text and reads
P(concept next token). The states below the site do not depend on the setting, so per batch of
texts this module computes them once and runs only blocks ``site.layer ..`` for all M settings,
stacked along the batch dimension (rows text-major: ``text * M + setting``):

* ``positions="last"``: the neuron is set at each text's last token and P(concept) is read at
  that token. One clean forward per text batch (left-padded) keeps the keys/values of the
  earlier positions (causal attention: they never see the last token) and the input of block L at
  the last token; each setting then runs ONE token through blocks L.. against that prefix.
* ``positions="all"``: the neuron is set at every token and P(concept) is averaged over every
  real position. The input of block L (all tokens) is cached once; each setting runs blocks L..
  on the whole text.

The probability is ``exp(logsumexp(logits[ids]) - logsumexp(logits))`` with the LM head applied
to the needed positions only, in chunks: no full-vocabulary softmax per setting.

Supports the Llama-layout families in ``FAST_FAMILIES`` (decoder blocks called directly with
rotary embeddings and masks, as ``reft/memorize/paths.py`` does) under eager or SDPA attention;
`fast_supported` says when, and `probes.neurons.concept_probability` falls back to hooked full
forwards elsewhere. tests/test_neurons_fast.py checks both paths agree.
"""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from workbench.hooked import HookedModel
from workbench.hooks import add_hook
from workbench.sites import Site

FAST_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
POSITIONS = ("last", "all")
LOGIT_CHUNK = 2048  # positions per LM-head matmul: bounds the (chunk, V) logits buffer


def fast_supported(hm: HookedModel) -> bool:
    """Whether the layers-above path runs on this model (else: full hooked forwards)."""
    config = hm.model.config
    base = getattr(hm.model, "base_model", None)
    return (getattr(config, "model_type", None) in FAST_FAMILIES
            and getattr(config, "_attn_implementation", "eager") in ("eager", "sdpa")
            and all(hasattr(base, name) for name in ("layers", "rotary_emb", "norm"))
            and hasattr(hm.model, "lm_head"))


def concept_log_probability(hidden: torch.Tensor, lm_head: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """log P(any concept token) from final-normed hidden states (n, d) -> (n,), chunked over n."""
    out = []
    for start in range(0, hidden.shape[0], LOGIT_CHUNK):
        logits = lm_head(hidden[start:start + LOGIT_CHUNK]).float()  # (c, V)
        out.append(logits[:, ids].logsumexp(-1) - logits.logsumexp(-1))  # (c,)
    return torch.cat(out) if out else hidden.new_zeros(0)


class _PrefixCache:
    """The smallest Cache the decoder attention needs: ``update`` prepends the fixed prefix."""

    def __init__(self, prefix: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.prefix = prefix  # layer -> (R, heads, P, head_dim) keys and values

    def update(self, keys, values, layer_idx, *args, **kwargs):
        old_k, old_v = self.prefix[layer_idx]
        return torch.cat([old_k, keys], dim=-2), torch.cat([old_v, values], dim=-2)  # (R, heads, P + 1, hd)


def _mask_kind(config, index: int) -> str:
    types = getattr(config, "layer_types", None)
    if types is not None:
        return types[index]
    if getattr(config, "model_type", "") == "mistral" and getattr(config, "sliding_window", None):
        return "sliding_attention"
    return "full_attention"


def _setter(point, rows: torch.Tensor, index: torch.Tensor, value: torch.Tensor):
    """A hook that sets channel ``index[r]`` of row r to ``value[r]`` at every position, in place."""
    def set_(hidden: torch.Tensor) -> None:
        view = hidden if point.head_slice is None else hidden[..., point.head_slice]  # (R, T, d)
        view[rows, :, index] = value.to(view.dtype)[:, None]  # (R, T)
    return set_


class UpperRunner:
    """Blocks ``layer ..`` of a Llama-layout model on given inputs, with one neuron set per row."""

    def __init__(self, hm: HookedModel, site: Site) -> None:
        if not fast_supported(hm):
            raise ValueError(f"the layers-above path supports model types {FAST_FAMILIES} under eager/sdpa "
                             f"attention, got {getattr(hm.model.config, 'model_type', None)!r}; use fast=False")
        self.hm, self.site = hm, site
        self.point = hm.layout.hook_point(site)
        self.base = hm.model.base_model
        self.config = hm.model.config
        self.layers = range(site.layer, hm.n_layers)

    def run(self, x, neurons, values, attention_mask, position_ids, cache=None) -> torch.Tensor:
        """``x`` (R, S, d) into block ``layer``; returns the final-normed states (R, S, d)."""
        rows = torch.arange(x.shape[0], device=x.device)
        position_embeddings = self.base.rotary_emb(x, position_ids=position_ids)  # (cos, sin)
        hooks = [] if neurons is None else [add_hook(self.point.module, self.point.kind,
                                                     _setter(self.point, rows, neurons, values))]
        try:
            for index in self.layers:
                mask = attention_mask[_mask_kind(self.config, index)] if isinstance(attention_mask, dict) else attention_mask
                x = self.base.layers[index](x, attention_mask=mask, position_ids=position_ids,
                                            position_embeddings=position_embeddings, cache=cache,
                                            use_cache=cache is not None)  # (R, S, d)
        finally:
            for hook in hooks:
                hook.remove()
        return self.base.norm(x)

    # ---- "last": one token per row against a cached prefix ------------------------------------
    def last(self, batch: dict, neurons, values, ids: torch.Tensor) -> torch.Tensor:
        """P(concept) at each text's last token, (b, M); ``batch`` left-padded (b, T)."""
        from transformers import DynamicCache

        input_ids, mask = batch["input_ids"], batch["attention_mask"]  # (b, T)
        b, m = input_ids.shape[0], 1 if neurons is None else len(neurons)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # (b, T)
        found = {}

        def read(hidden: torch.Tensor) -> None:
            found["x"] = hidden[:, -1:].clone()  # (b, 1, d): block L's input at the last token

        block = self.base.layers[self.site.layer]
        cache = DynamicCache(config=self.config)
        with torch.no_grad():
            hook = add_hook(block, "input", read)
            try:
                self.base(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, cache=cache,
                          use_cache=True)
            finally:
                hook.remove()
            prefix = {i: (cache.layers[i].keys[:, :, :-1].repeat_interleave(m, 0),
                          cache.layers[i].values[:, :, :-1].repeat_interleave(m, 0)) for i in self.layers}
            x = found["x"].repeat_interleave(m, 0)  # (R, 1, d)
            real = mask.repeat_interleave(m, 0).bool()  # (R, T)
            dtype = x.dtype
            additive = torch.zeros(real.shape, dtype=dtype, device=x.device).masked_fill(~real, torch.finfo(dtype).min)
            masks = {"full_attention": additive[:, None, None, :]}  # (R, 1, 1, T)
            window = getattr(self.config, "sliding_window", None)
            if window:
                far = position_ids[:, -1:] - position_ids >= window  # (b, T): outside the window
                masks["sliding_attention"] = additive.masked_fill(far.repeat_interleave(m, 0), torch.finfo(dtype).min
                                                                  )[:, None, None, :]
            pos = position_ids[:, -1:].repeat_interleave(m, 0)  # (R, 1)
            tiled = (None, None) if neurons is None else (neurons.repeat(b), values.repeat(b))
            h = self.run(x, *tiled, masks, pos, _PrefixCache(prefix))  # (R, 1, d)
            return concept_log_probability(h[:, 0], self.hm.model.lm_head, ids).exp().view(b, m)

    # ---- "all": whole texts, states below cached --------------------------------------------
    def all(self, batch: dict, neurons, values, ids: torch.Tensor) -> torch.Tensor:
        """Mean P(concept) over each text's real positions, (b, M); ``batch`` right-padded (b, T)."""
        from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

        mask = batch["attention_mask"]  # (b, T)
        b, m = mask.shape[0], 1 if neurons is None else len(neurons)
        entry = Site(self.site.layer, "resid_pre")
        with torch.no_grad():
            x = self.hm.cache(batch, [entry])[entry].repeat_interleave(m, 0)  # (R, T, d): computed once
            full = mask.repeat_interleave(m, 0)  # (R, T)
            position_ids = (full.cumsum(-1) - 1).clamp(min=0)  # (R, T)
            args = dict(config=self.config, inputs_embeds=x, attention_mask=full, cache=None, position_ids=position_ids)
            builders = {"full_attention": create_causal_mask, "sliding_attention": create_sliding_window_causal_mask}
            kinds = {_mask_kind(self.config, i) for i in self.layers}
            masks = {kind: builders[kind](**args) for kind in kinds}
            tiled = (None, None) if neurons is None else (neurons.repeat(b), values.repeat(b))
            h = self.run(x, *tiled, masks, position_ids)  # (R, T, d)
            real = full.bool()  # (R, T)
            p = torch.zeros(real.shape, device=h.device)
            p[real] = concept_log_probability(h[real], self.hm.model.lm_head, ids).exp()  # only real positions
            return (p.sum(1) / real.sum(1)).view(b, m)


@torch.no_grad()
def fast_concept_probability(hm: HookedModel, texts: Sequence[str], concept_ids: Sequence[int], site: Site | str,
                             neurons: torch.Tensor | None = None, values: torch.Tensor | None = None,
                             positions: str = "last", rows: int = 256, progress: bool = False) -> torch.Tensor:
    """Same contract as `probes.neurons.concept_probability`: (M, N_texts), or (1, N) without neurons.

    Texts are sorted by length (less padding) and taken ``rows // M`` at a time (at least one).
    """
    if positions not in POSITIONS:
        raise ValueError(f"positions={positions!r}: expected one of {POSITIONS}")
    site = Site.parse(site)
    runner = UpperRunner(hm, site)
    ids = torch.as_tensor(list(concept_ids), device=hm.device)
    if neurons is not None:
        neurons, values = neurons.to(hm.device).long(), values.to(hm.device).float()
    m = 1 if neurons is None else len(neurons)
    out = torch.zeros(m, len(texts))
    lengths = [len(t) for t in hm.tokenizer(list(texts))["input_ids"]]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    per = max(1, rows // m)
    side = "left" if positions == "last" else "right"
    with tqdm(total=len(texts), desc=f"interventions ({m} settings)", unit="text", disable=not progress) as bar:
        for start in range(0, len(order), per):
            chunk = order[start:start + per]
            batch = hm.tokenize([texts[i] for i in chunk], padding_side=side)
            probs = (runner.last if positions == "last" else runner.all)(batch, neurons, values, ids)  # (b, M)
            out[:, chunk] = probs.T.float().cpu()
            bar.update(len(chunk))
    return out  # (M, N)
