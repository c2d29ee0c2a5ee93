"""Causal tests of a direction: directional patching and directional ablation, and their metrics.

Directional patching (Tigges et al.) writes the clean run's projection onto a unit direction u
into the flipped (corrupted) run: ``out = b + u (uᵀs − uᵀb)`` — the workbench DAS module's
`SubspaceInterchange` with a one-row basis. Directional ablation sets the projection to a
constant: ``out = b + u (c − uᵀb)`` (c = 0 projects u out; c = a dataset mean is mean ablation).

Logit-difference recovery ``(LD_patched − LD_flipped) / (LD_clean − LD_flipped)`` is 1 when the
patch restores the clean behaviour and 0 when it changes nothing. LD is signed by the clean
prompt's answer (logit[answer] − logit[foil]).

>>> ablate = DirectionalAblation(torch.tensor([1.0, 0.0]))
>>> ablate(torch.tensor([[[3.0, 4.0]]])).tolist()
[[[0.0, 4.0]]]
>>> recovery(torch.tensor([0.5]), torch.tensor([2.0]), torch.tensor([-1.0]))
0.5
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from workbench.das import SubspaceInterchange
from workbench.das.data import last_logits_kwargs
from workbench.hooked import HookedModel
from workbench.interventions import Intervention
from workbench.plan import PlanItem
from workbench.positions import AllTokens, PositionSelector, Positions, TokenMatch, parse_positions

class AllButFirst(PositionSelector):
    """Every real token except each example's first: spares the attention-sink token (the first
    token of models without BOS carries outsized activations, so editing it harms everything)."""

    def resolve(self, input_ids, attention_mask, tokenizer=None) -> Positions:
        every = AllTokens().resolve(input_ids, attention_mask, tokenizer)
        if every.index.shape[1] < 2:
            raise ValueError("every example has a single token: 'non_first' selects nothing; use longer inputs")
        return Positions(every.index[:, 1:], every.mask[:, 1:])  # (B, T - 1)

    def __repr__(self) -> str:
        return "AllButFirst()"


# Named position sets of the causal tests; each is a workbench position selector.
POSITION_SETS: dict[str, PositionSelector] = {
    "all": AllTokens(),
    "non_first": AllButFirst(),
    "comma": TokenMatch(","),
    "punctuation": TokenMatch(r"[,.;:!?]"),
    "non_comma": TokenMatch(r"(?!,$).*"),  # every token except commas (the complement of 'comma')
}


def position_set(name: str | PositionSelector) -> PositionSelector:
    """A named position set (`POSITION_SETS`), or any workbench position spec ('l1', 'match:,')."""
    if isinstance(name, str) and name in POSITION_SETS:
        return POSITION_SETS[name]
    try:
        return parse_positions(name)
    except ValueError:
        raise ValueError(f"positions {name!r}: expected one of {sorted(POSITION_SETS)} or a workbench "
                         f"position spec such as 'l1' or 'match:,'") from None


def directional_patch(u: torch.Tensor) -> Intervention:
    """Directional patching along ``u`` (d,): ``out = b + û (ûᵀs − ûᵀb)``.

    >>> p = directional_patch(torch.tensor([0.0, 2.0]))
    >>> p(torch.zeros(1, 1, 2), torch.ones(1, 1, 2)).tolist()
    [[[0.0, 1.0]]]
    """
    if u.dim() != 1:
        raise ValueError(f"direction must be a (d,) vector, got shape {tuple(u.shape)}")
    return SubspaceInterchange(u[None, :])


class DirectionalAblation(Intervention):
    """Directional ablation: ``out = b + û (c − ûᵀb)`` with û = u/|u| and a constant ``value`` c.

    c = 0 removes the component along u; c = the mean projection over a dataset mean-ablates it.
    """

    def __init__(self, u: torch.Tensor, value: float = 0.0) -> None:
        super().__init__()
        if u.dim() != 1 or not torch.isfinite(u).all() or float(u.norm()) == 0.0:
            raise ValueError(f"direction must be a finite non-zero (d,) vector, got shape {tuple(u.shape)}")
        self.register_buffer("u", (u / u.norm()).detach().float().clone())  # (d,)
        self.value = float(value)
        self.hidden_size = u.shape[0]

    def forward(self, base, source=None):
        u = self.u.to(base.dtype)  # (d,)
        coefficient = self.value - base @ u  # (B, k)
        return base + coefficient[..., None] * u  # (B, k, d)


def recovery(ld_patched: torch.Tensor, ld_clean: torch.Tensor, ld_flipped: torch.Tensor) -> float:
    """(mean LD_patched − mean LD_flipped) / (mean LD_clean − mean LD_flipped), a float.

    Means over examples first, so pairs with a tiny clean/flipped gap cannot blow the ratio up.
    """
    gap = float(ld_clean.float().mean() - ld_flipped.float().mean())
    if abs(gap) < 1e-8:
        raise ValueError("clean and flipped runs have the same mean logit difference: recovery is undefined; "
                         "check that the prompts of each pair differ in sentiment")
    return float(ld_patched.float().mean() - ld_flipped.float().mean()) / gap


def flip_rate(ld_patched: torch.Tensor, ld_flipped: torch.Tensor) -> float:
    """Share of the pairs the flipped run got wrong (LD < 0) that the patch turns right (LD > 0)."""
    wrong = ld_flipped < 0
    if not bool(wrong.any()):
        return float("nan")
    return float((ld_patched[wrong] > 0).float().mean())


@torch.no_grad()
def logit_differences(hm: HookedModel, prompts: Sequence[str], answer_ids: Sequence[int] | torch.Tensor,
                      foil_ids: Sequence[int] | torch.Tensor, plan_for: Callable[[int, int], list] | None = None,
                      batch_size: int = 32, progress=None) -> torch.Tensor:
    """``logit[answer] − logit[foil]`` at each prompt's last token, (N,), under a plan per batch.

    ``plan_for(start, stop)`` returns the plan items for prompts[start:stop] (e.g. with that
    slice's cached ``source_values``); None runs the plain model. Prompts are left-padded and
    only the last position's logits are computed.

    >>> logit_differences(hm, ["... This movie is"], [good_id], [bad_id])   # doctest: +SKIP
    tensor([2.31])
    """
    answer_ids, foil_ids = torch.as_tensor(answer_ids), torch.as_tensor(foil_ids)  # (N,), (N,)
    if not len(prompts) == len(answer_ids) == len(foil_ids):
        raise ValueError(f"{len(prompts)} prompts, {len(answer_ids)} answers, {len(foil_ids)} foils: "
                         f"give one answer and one foil per prompt")
    values = []
    for start in range(0, len(prompts), batch_size):
        stop = min(start + batch_size, len(prompts))
        batch = hm.tokenize(list(prompts[start:stop]), padding_side="left")
        plan = plan_for(start, stop) if plan_for is not None else []
        with hm.intervene(plan):
            logits = hm.forward(batch, use_cache=False, **last_logits_kwargs(hm)).logits[:, -1].float()  # (b, V)
        rows = torch.arange(stop - start)
        values.append(logits[rows, answer_ids[start:stop]] - logits[rows, foil_ids[start:stop]])  # (b,)
        if progress is not None:
            progress.update(stop - start)
    return torch.cat(values).cpu()  # (N,)


@torch.no_grad()
def cache_all_positions(hm: HookedModel, prompts: Sequence[str], sites: Sequence, batch_size: int = 32
                        ) -> dict:
    """Activations at every token of equal-length prompts: {site: (N, T, d)} (no padding allowed).

    >>> acts = cache_all_positions(hm, reviews.prompt, ["L4.resid_post"])   # doctest: +SKIP
    """
    lengths = {len(hm.tokenizer(p)["input_ids"]) for p in prompts}
    if len(lengths) != 1:
        raise ValueError(f"prompts have different token counts {sorted(lengths)}; directional patching "
                         f"pairs need equal lengths (use single-token adjectives and verbs)")
    parts: dict = {}
    for start in range(0, len(prompts), batch_size):
        acts = hm.cache(list(prompts[start:start + batch_size]), list(sites))
        for site, value in acts.items():
            parts.setdefault(site, []).append(value)  # (b, T, d)
    return {site: torch.cat(chunks) for site, chunks in parts.items()}


def source_values_at(hm: HookedModel, prompts: Sequence[str], states: torch.Tensor,
                     positions: PositionSelector) -> torch.Tensor:
    """Slice cached states (N, T, d) at the positions ``positions`` selects in ``prompts``: (N, k, d)."""
    batch = hm.tokenize(list(prompts))
    resolved = positions.resolve(batch["input_ids"], batch["attention_mask"], hm.tokenizer)
    rows = torch.arange(states.shape[0])[:, None]  # (N, 1)
    return states[rows, resolved.index.to(states.device)]  # (N, k, d)


def patch_plan(site, u: torch.Tensor, positions: PositionSelector, values: torch.Tensor) -> Callable:
    """``plan_for`` of a directional patch at ``site`` from precomputed source ``values`` (N, k, d)."""
    def plan_for(start: int, stop: int) -> list[PlanItem]:
        return [PlanItem(site, positions, directional_patch(u), source_values=values[start:stop])]
    return plan_for


def ablation_plan(directions: dict, values: dict, positions: PositionSelector) -> Callable:
    """``plan_for`` ablating each site's direction: {site: u (d,)}, {site: c} -> same plan every batch."""
    items = [PlanItem(site, positions, DirectionalAblation(u, values.get(site, 0.0))) for site, u in directions.items()]
    return lambda start, stop: items
