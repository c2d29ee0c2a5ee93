"""Direct logit attribution: how much each head and MLP writes along ``W_U[target] − W_U[foil]``.

The residual stream at the last token is a sum: embedding + Σ heads (each head's ``z`` through its
slice of the output projection) + output-projection biases + Σ MLPs. The final norm is not
linear, so, as TransformerLens does, its scale is **frozen** at the value it has on the actual
final residual: RMSNorm ``x ↦ w ⊙ x / rms(x_final)``; LayerNorm ``x ↦ w ⊙ (x − mean x) /
std(x_final)`` plus its bias as one more term. Under that convention the terms add up to the
model's logit difference exactly (up to float rounding): ``Σ dla = logit[target] − logit[foil]``.

Families whose sub-blocks are normed *after* the output projection (Gemma 2/3) or post-LN (BERT)
have no such sum and get a clear error.

>>> df = direct_logit_attribution(hm, "When Mary and John went to the store, John gave a drink to",
...                               target=" Mary", foil=" John")            # doctest: +SKIP
>>> df.sort_values("dla").tail(3)                                          # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch
from torch import nn

from workbench import HookedModel, Site
from workbench.sweeps import single_token_id

from .lens import final_norm


def _check_family(hm: HookedModel) -> None:
    adapter = hm.layout.adapter
    if adapter.attn_out != adapter.z or not adapter.causal:
        raise ValueError(f"{hm.name} ({adapter.family}): its attention output is not the output projection of the "
                         f"heads' z (a norm sits between them), so the stream is no sum of per-head terms; "
                         f"direct logit attribution supports GPT-2, the Llama family, Gemma and GPT-NeoX: use one of those")


def _out_projection(hm: HookedModel, layer: int) -> nn.Module:
    return hm.layout.hook_point(Site(layer, "z")).module  # the module whose input is z


@torch.no_grad()
def head_outputs(hm: HookedModel, layer: int, z: torch.Tensor) -> torch.Tensor:
    """Each head's write into the stream, without the projection's bias: z (..., W) -> (..., H, d).

    Llama-style ``nn.Linear`` keeps W_O as (d, W); GPT-2's Conv1D as (W, d).
    """
    proj = _out_projection(hm, layer)
    n_heads = hm.layout.n_heads
    z = z.to(proj.weight.device)
    heads = z.reshape(*z.shape[:-1], n_heads, -1)  # (..., H, hd)
    if isinstance(proj, nn.Linear):
        W = proj.weight.T  # (W, d)
    else:
        W = proj.weight  # Conv1D: (W, d)
    W = W.reshape(n_heads, -1, W.shape[-1]).to(z.dtype)  # (H, hd, d)
    return torch.einsum("...hk,hkd->...hd", heads, W)  # (..., H, d)


def _frozen_norm(norm: nn.Module, final: torch.Tensor) -> tuple[torch.Tensor, bool, torch.Tensor | None]:
    """(per-channel scale (B, d), whether inputs are centered, bias (d,) or None) of ``norm``
    frozen at the final residual ``final`` (B, d)."""
    x = final.float()
    if isinstance(norm, nn.LayerNorm):
        std = (x.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()  # (B, 1)
        weight = norm.weight.float() if norm.weight is not None else torch.ones_like(x[0])
        bias = norm.bias.float() if norm.bias is not None else None
        return weight / std, True, bias
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if eps is None or not hasattr(norm, "weight"):
        raise ValueError(f"final norm {type(norm).__name__}: not a LayerNorm or RMSNorm; direct logit "
                         f"attribution knows those two; use a GPT-2, Llama-family, Gemma or GPT-NeoX model")
    rms = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()  # (B, 1)
    # Gemma's RMSNorm multiplies by (1 + w); the Llama family's by w
    weight = 1.0 + norm.weight.float() if "Gemma" in type(norm).__name__ else norm.weight.float()
    return weight / rms, False, None


@torch.no_grad()
def direct_logit_attribution(hm: HookedModel, prompts: str | Sequence[str], target: str, foil: str,
                             layers: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per (prompt, component): the component's direct effect on logit[target] − logit[foil]
    at the prompt's last token, under the frozen-final-norm convention (module docstring).

    Components: ``embed``; ``L{l}.head{h}`` and (with a bias) ``L{l}.attn_bias``; ``L{l}.mlp``;
    ``final_norm_bias`` (LayerNorm) and ``unembed_bias`` where the model has them. Columns:
    prompt, component, kind (embed/head/mlp/bias), layer, head, dla, logit_diff (the model's).
    ``layers`` only filters the rows shown; the sum over all rows is the logit difference.
    """
    _check_family(hm)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    target_id, foil_id = single_token_id(hm, target), single_token_id(hm, foil)
    norm, head = final_norm(hm), hm.model.get_output_embeddings()
    n = hm.n_layers
    sites = [Site(0, "resid_pre"), Site(n - 1, "resid_post")]
    sites += [Site(l, c) for l in range(n) for c in ("z", "mlp_out")]
    rows = []
    for text in prompts:
        acts = {s: a[:, 0] for s, a in hm.cache(text, sites, positions=[-1]).items()}  # (1, W) each
        logits = hm.forward(text, use_cache=False).logits[0, -1]  # (V,) as the model computes it
        logit_diff = float(logits[target_id] - logits[foil_id])
        direction = (head.weight[target_id] - head.weight[foil_id]).float()  # (d,)
        scale, centered, bias = _frozen_norm(norm, acts[Site(n - 1, "resid_post")].to(direction.device))

        def along(vectors: torch.Tensor) -> torch.Tensor:  # (1, ..., d) -> (...,)
            v = vectors.float().to(direction.device)  # a dispatched model's layers may sit elsewhere
            if centered:
                v = v - v.mean(-1, keepdim=True)
            s = scale.reshape(1, *([1] * (v.dim() - 2)), -1)
            return ((v * s) @ direction)[0]

        def add(component, kind, layer, head_index, value):
            rows.append({"prompt": text, "component": component, "kind": kind, "layer": layer,
                         "head": head_index, "dla": float(value), "logit_diff": logit_diff})

        add("embed", "embed", -1, -1, along(acts[Site(0, "resid_pre")]))
        for l in range(n):
            per_head = along(head_outputs(hm, l, acts[Site(l, "z")]))  # (H,)
            for h, value in enumerate(per_head.tolist()):
                add(f"L{l}.head{h}", "head", l, h, value)
            proj_bias = getattr(_out_projection(hm, l), "bias", None)
            if proj_bias is not None:
                add(f"L{l}.attn_bias", "bias", l, -1, along(proj_bias[None]))
            add(f"L{l}.mlp", "mlp", l, -1, along(acts[Site(l, "mlp_out")]))
        if bias is not None:
            add("final_norm_bias", "bias", -1, -1, bias @ direction)
        head_bias = getattr(head, "bias", None)
        if head_bias is not None:
            add("unembed_bias", "bias", -1, -1, head_bias[target_id] - head_bias[foil_id])
    df = pd.DataFrame(rows)
    if layers is not None:
        df = df[df.layer.isin(list(layers)) | (df.layer == -1)].reset_index(drop=True)
    df.attrs.update(kind="direct logit attribution", target=target, foil=foil)
    return df
