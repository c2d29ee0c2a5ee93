"""Logit lens: read any site's state as if it were the last layer's, through the final norm and
the unembedding.

`decode` applies exactly the model's own head (final norm, ``lm_head``, Gemma 2's final logit
soft-capping) with the same ops in the same order, so decoding the last layer's ``resid_post``
gives the model's logits bit for bit. Per-head ``z`` sites are first mapped into the residual
stream through their slice of the output projection (`analyses.dla.head_outputs`).

>>> df = logit_lens(hm, "The capital of France is", top_k=3)          # doctest: +SKIP
>>> df[df.position == df.position.max()][["layer", "top_tokens"]]       # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from workbench import HookedModel, Site

LENS_COMPONENTS = ("resid_pre", "resid_post", "attn_out", "mlp_out", "z")


def final_norm(hm: HookedModel) -> torch.nn.Module:
    """The model's final norm (from the adapter), or an error naming the families that have one."""
    norm = hm.layout.final_norm
    if norm is None:
        raise ValueError(f"{hm.name} ({hm.layout.adapter.family}) has no final norm before its unembedding "
                         f"(BERT's sits inside the MLM head): the logit lens and direct logit attribution need "
                         f"a decoder; use a causal LM (e.g. smollm2-135m)")
    return norm


def unembed(hm: HookedModel, normed: torch.Tensor) -> torch.Tensor:
    """``lm_head`` (and Gemma 2/3's final soft-cap) on already normed states (..., d) -> (..., V)."""
    logits = hm.model.get_output_embeddings()(normed)
    cap = getattr(hm.model.config, "final_logit_softcapping", None)
    if cap is not None:  # the same three ops as the model's forward, for bit-identical logits
        logits = logits / cap
        logits = torch.tanh(logits)
        logits = logits * cap
    return logits


@torch.no_grad()
def decode(hm: HookedModel, states: torch.Tensor) -> torch.Tensor:
    """Logits (..., V) of residual-stream states (..., d): final norm, then the unembedding.

    >>> last = hm.cache("Paris is", ["L29.resid_post"])[Site(29, "resid_post")]     # doctest: +SKIP
    >>> torch.equal(decode(hm, last), hm.forward("Paris is").logits)              # doctest: +SKIP
    True
    """
    norm = final_norm(hm)
    return unembed(hm, norm(states.to(hm.model.get_output_embeddings().weight.device)))


def _sites(hm: HookedModel, sites: Sequence[Site | str] | None) -> list[Site]:
    if sites is None:
        return [Site(l, "resid_post") for l in range(hm.n_layers)]
    sites = [Site.parse(s) for s in sites]
    for site in sites:
        hm.layout.hook_point(site)  # names the layer/head range
        if site.component not in LENS_COMPONENTS or (site.component == "z" and site.head is None):
            raise ValueError(f"site {site}: the logit lens reads residual-stream states; use one of "
                             f"{[c for c in LENS_COMPONENTS if c != 'z']} or a single head 'L{site.layer}.head0.z'")
    return sites


def logit_lens(hm: HookedModel, text: str, sites: Sequence[Site | str] | None = None, top_k: int = 5,
               target: str | None = None) -> pd.DataFrame:
    """One row per (site, position): the lens's top tokens and their probabilities, and with
    ``target`` (one token) its probability and rank (0 = the lens's top token).

    Default sites: every layer's ``resid_post`` (the last one is the model's own prediction).
    """
    from .dla import head_outputs

    if top_k < 1:
        raise ValueError(f"top_k {top_k} out of range: give top_k >= 1 (e.g. 5)")
    sites = _sites(hm, sites)
    batch = hm.tokenize(text)
    needed = [Site(s.layer, "z") if s.component == "z" else s for s in sites]
    acts = hm.cache(batch, list(dict.fromkeys(needed)))
    target_id = None
    if target is not None:
        from workbench.sweeps import single_token_id
        target_id = single_token_id(hm, target)
    tokens = [hm.tokenizer.decode([i]) for i in batch["input_ids"][0].tolist()]
    rows = []
    for site in sites:
        if site.component == "z":
            states = head_outputs(hm, site.layer, acts[Site(site.layer, "z")])[:, :, site.head]  # (1, T, d)
        else:
            states = acts[site]  # (1, T, d)
        probs = decode(hm, states)[0].float().softmax(-1)  # (T, V)
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        for p in range(probs.shape[0]):
            row = {"site": str(site), "layer": site.layer, "component": site.component, "position": p,
                   "token": tokens[p], "top_tokens": [hm.tokenizer.decode([i]) for i in top.indices[p].tolist()],
                   "top_probs": [round(v, 6) for v in top.values[p].tolist()],
                   "top_prob": float(top.values[p, 0])}
            if target_id is not None:
                row["target_prob"] = float(probs[p, target_id])
                row["target_rank"] = int((probs[p] > probs[p, target_id]).sum())
            rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs.update(kind="logit lens", target=target)
    return df
