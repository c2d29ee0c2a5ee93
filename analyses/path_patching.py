"""Path patching as in the IOI paper (Wang et al. 2022): the effect of sender components on the
output *through* chosen receiver components only.

Two passes per sender, many senders stacked along the batch (one row each):

1. Run the base with the sender's output taken from the source run and every other head frozen
   at its base value (MLPs too with ``freeze_mlps``); receivers are not frozen, and their new
   values are recorded.
2. Run the base again with only the receivers set to those recorded values; the metric is the
   sender → receivers path effect.

Receivers are sites (``L5.head2.z``: a head's output, so the path runs through its queries, keys
and values together; ``L5.z``, ``L5.mlp_out``, ``L5.resid_pre``, ...) or ``"logits"``: then pass 1's
output is the result. With ``receivers="logits"`` and ``freeze_mlps=True`` only the sender's own
write into the final residual differs from the base: that is the head's **direct effect**
(`direct_effects`). Senders are heads (``L2.head1.z``) or MLPs (``L2.mlp_out``), patched at every
position.

>>> df = path_patch(hm, base, source, receivers=["L9.head6.z", "L9.head9.z"],
...                 target=" Mary", foil=" John")                            # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from workbench import Collect, HookedModel, Patch, PlanItem, Site
from workbench.metrics import Metric
from workbench.prefix_cells import last_token_kwargs

from .attribution import resolve_metric, tokenize_pair

RECEIVER_COMPONENTS = ("z", "resid_pre", "resid_post", "attn_out", "mlp_out")


def _order(site: Site) -> int:
    """Where a site sits in the forward: resid_pre(l) < heads(l) < mlp(l) < resid_post(l)."""
    step = {"resid_pre": 0, "z": 1, "attn_out": 1, "mlp_out": 2, "mlp_act": 2, "resid_post": 3}[site.component]
    return 4 * site.layer + step


def _parse_senders(hm: HookedModel, senders) -> list[Site]:
    if senders is None:
        return [Site(l, "z", head=h) for l in range(hm.n_layers) for h in range(hm.layout.n_heads)]
    found = []
    for s in senders:
        site = Site.parse(s)
        hm.layout.hook_point(site)  # names the layer and head ranges
        if not ((site.component == "z" and site.head is not None) or site.component == "mlp_out"):
            raise ValueError(f"sender {site}: senders are single heads ('L{site.layer}.head0.z') or MLPs "
                             f"('L{site.layer}.mlp_out'); give one of those")
        found.append(site)
    return found


def _parse_receivers(hm: HookedModel, receivers) -> list[Site] | None:
    if isinstance(receivers, str) and receivers == "logits":
        return None
    receivers = [receivers] if isinstance(receivers, (str, Site)) else list(receivers)
    if not receivers:
        raise ValueError("receivers is empty: give sites such as ['L5.head2.z'] or 'logits'")
    found = []
    for r in receivers:
        site = Site.parse(r)
        hm.layout.hook_point(site)
        if site.component not in RECEIVER_COMPONENTS:
            raise ValueError(f"receiver {site}: receivers are one of {list(RECEIVER_COMPONENTS)} sites or 'logits'; "
                             f"give e.g. 'L{site.layer}.head0.z'")
        found.append(site)
    return found


def path_patch(hm: HookedModel, base: str, source: str, receivers: Sequence[Site | str] | str = "logits",
               metric: Metric | None = None, target: str | None = None, foil: str | None = None,
               senders: Sequence[Site | str] | None = None, freeze_mlps: bool = False,
               batch_size: int = 32) -> pd.DataFrame:
    """One row per sender: the metric when only the sender → receivers path carries the source.

    Columns: sender, layer, head (−1 for an MLP), value, base_value, source_value, normalized
    (0 = the base, 1 = the whole source run). Senders must lie upstream of every receiver.
    """
    metric = resolve_metric(hm, metric, target, foil)
    base_batch, source_batch = tokenize_pair(hm, base, source)
    chosen = senders is not None
    senders, receivers_ = _parse_senders(hm, senders), _parse_receivers(hm, receivers)
    if receivers_ is not None:
        first = min(_order(r) for r in receivers_)
        late = [str(s) for s in senders if _order(s) >= first]
        if late and chosen:
            raise ValueError(f"senders {late} do not lie upstream of the receivers {[str(r) for r in receivers_]}; "
                             f"give senders in earlier layers")
        senders = [s for s in senders if _order(s) < first]
        if not senders:
            raise ValueError(f"no head lies upstream of the receivers {[str(r) for r in receivers_]}; "
                             f"choose receivers in a later layer")
    n_layers = hm.n_layers
    frozen_sites = [Site(l, "z") for l in range(n_layers)] + [Site(l, "mlp_out") for l in range(n_layers)]
    clean = hm.cache(base_batch, frozen_sites)  # (1, T, W) each
    dirty = hm.cache(source_batch, frozen_sites)
    values: list[float] = []
    for start in range(0, len(senders), batch_size):
        chunk = senders[start:start + batch_size]
        recorded = _pass_one(hm, base_batch, chunk, receivers_, clean, dirty, freeze_mlps, metric)
        values += recorded if receivers_ is None else _pass_two(hm, base_batch, receivers_, recorded, metric)
    with torch.no_grad():
        clean_value = float(metric(hm.forward(base_batch, use_cache=False).logits, base_batch)[0])
        source_value = float(metric(hm.forward(source_batch, use_cache=False).logits, source_batch)[0])
    df = pd.DataFrame({"sender": [str(s) for s in senders], "layer": [s.layer for s in senders],
                       "head": [-1 if s.head is None else s.head for s in senders], "value": values})
    df["base_value"], df["source_value"] = clean_value, source_value
    scale = source_value - clean_value
    df["normalized"] = (df["value"] - clean_value) / scale if scale != 0 else float("nan")
    df.attrs.update(kind="path patching", receivers=receivers if isinstance(receivers, str)
                    else [str(r) for r in receivers_], freeze_mlps=freeze_mlps)
    return df


def _channel_mask(hm: HookedModel, layer: int, width: int, heads: Sequence[int]) -> torch.Tensor:
    mask = torch.zeros(width, dtype=torch.bool, device=hm.device_of(Site(layer, "z")))  # (W,)
    hd = width // hm.layout.n_heads
    for h in heads:
        mask[h * hd:(h + 1) * hd] = True
    return mask


@torch.no_grad()
def _pass_one(hm, base_batch, chunk, receivers, clean, dirty, freeze_mlps, metric):
    """Pass 1 for each sender in ``chunk`` (one batch row each): the recorded receiver values
    {receiver: (n, T, d)}, or, for ``logits``, the metric values."""
    n = len(chunk)
    receivers = receivers or []
    plan = []
    for layer in range(hm.n_layers):
        for component in ("z", "mlp_out"):
            site = Site(layer, component)
            base_z, source_z = clean[site], dirty[site]  # (1, T, W)
            width = base_z.shape[-1]
            if component == "z":
                # a receiver that is a whole layer's attention leaves all of its heads free
                receiving = [None if r.component == "attn_out" else r.head for r in receivers
                             if r.layer == layer and r.component in ("z", "attn_out")]
                frozen = ~_channel_mask(hm, layer, width, range(hm.layout.n_heads)) if None in receiving \
                    else ~_channel_mask(hm, layer, width, receiving)  # (W,) every head but the receivers
            else:
                receiving = any(r.layer == layer and r.component == "mlp_out" for r in receivers)
                frozen = torch.full((width,), freeze_mlps and not receiving, dtype=torch.bool, device=base_z.device)
            masks = frozen.expand(n, 1, width).clone()  # (n, 1, W)
            values = base_z.expand(n, -1, -1).clone()  # (n, T, W)
            for row, sender in enumerate(chunk):
                if sender.layer != layer or sender.component != component:
                    continue
                own = _channel_mask(hm, layer, width, [sender.head]) if component == "z" else \
                    torch.ones(width, dtype=torch.bool, device=base_z.device)
                masks[row, 0] |= own
                values[row][:, own] = source_z[0][:, own]
            if bool(masks.any()):
                plan.append(PlanItem(site, "all", Patch(dims=masks), source_values=values))
    collectors = {r: Collect() for r in receivers}
    plan += [PlanItem(r, "all", c) for r, c in collectors.items()]
    batch = {k: v.expand(n, -1) for k, v in base_batch.items()}  # (n, T)
    logits = hm.run(batch, plan)  # (n, T, V)
    if not receivers:
        return metric(logits, batch).float().tolist()
    return {r: c.values[-1] for r, c in collectors.items()}


@torch.no_grad()
def _pass_two(hm, base_batch, receivers, recorded, metric) -> list[float]:
    """Pass 2: the base with only the receivers set to their pass-1 values; metric per row."""
    n = next(iter(recorded.values())).shape[0]
    batch = {k: v.expand(n, -1) for k, v in base_batch.items()}  # (n, T)
    plan = [PlanItem(r, "all", Patch(), source_values=recorded[r]) for r in receivers]
    logits = hm.run(batch, plan, **last_token_kwargs(hm))[:, -1:]  # (n, 1, V)
    ones = torch.ones(n, 1, dtype=torch.long, device=logits.device)
    return metric(logits, {"attention_mask": ones}).float().tolist()


def direct_effects(hm: HookedModel, base: str, source: str, metric: Metric | None = None,
                   target: str | None = None, foil: str | None = None, batch_size: int = 32) -> pd.DataFrame:
    """Each head's direct effect: path patching from the head to the logits with every other head
    and every MLP frozen, so the only change is the head's own write into the final residual.

    >>> direct_effects(hm, base, source, target=" Mary", foil=" John").nlargest(3, "normalized")  # doctest: +SKIP
    """
    return path_patch(hm, base, source, "logits", metric, target, foil, freeze_mlps=True, batch_size=batch_size)
