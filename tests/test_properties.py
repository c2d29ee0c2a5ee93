"""Property-based tests: random plans on random padded batches equal a naive per-example reference.

Hypothesis draws a family, a site (every component, whole or one head), a position spec (indices,
per-example rows, ``f<n>+l<n>``, ``all``, token matches), an intervention kind (patching, ablations,
steering, DAS, ReFT), a batch of mixed lengths padded on either side, and sources (one per base
example or one broadcast source, padded on either side). The workbench's batched ``hm.run`` must
equal the reference: each example run alone, unpadded, through the plain Hugging Face model with a
hand-written ``register_forward_hook``/``register_forward_pre_hook`` that applies the
intervention's formula token by token at positions resolved here, from the spec, for that example.
Nothing of ``workbench.positions``, ``workbench.hooks`` or the interventions' ``forward`` is used by
the reference (only ``hm.layout.hook_point`` to name the module, and the interventions' parameters).

Runs are derandomized and database-free, so CI sees the same examples every time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import WORDS, tiny_model
from reft.interventions import ConsReFT, DiReFT, LoReFT
from workbench import AddVector, Collect, MeanAblation, Patch, PlanItem, Site, ZeroAblation
from workbench.das import (BoundlessRotatedSpaceIntervention, LowRankRotatedSpaceIntervention,
                           RotatedSpaceIntervention)
from workbench.positions import AllTokens, FirstLast, Indices, TokenMatch

FAMILIES = ("llama", "gpt2", "gemma2", "gpt_neox", "bert")
COMPONENTS = ("resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_act", "z", "head_z")
SOURCE_KINDS = ("patch", "patch_dims", "das_lowrank", "das_rotated", "das_boundless")
FREE_KINDS = ("zero", "zero_dims", "mean", "add", "loreft", "direft", "consreft")
PATTERNS = (",", r"[,.!?]", "the|a", "cat")  # token matches: some batches have none
TOKENS = tuple(range(3, len(WORDS)))  # real words (no pad/unk/eos), commas and full stops among them
PAD = 0
ATOL = 1e-5
SETTINGS = settings(max_examples=120, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: 1 torch thread for the module


@lru_cache(maxsize=None)
def model(family: str):
    return tiny_model(family)


# ---- the reference: positions resolved by hand, per example ------------------------------------
@dataclass(frozen=True)
class Spec:
    """A position spec as the reference understands it. kind: indices | rows | firstlast | all | match."""

    kind: str
    indices: tuple = ()  # indices: one tuple; rows: one tuple per example
    first: int = 0
    last: int = 0
    pattern: str = ""

    def selector(self):
        """The workbench selector for the batched run (strings where the parser is exercised too)."""
        if self.kind == "indices":
            return ",".join(str(i) for i in self.indices)
        if self.kind == "rows":
            return Indices([list(r) for r in self.indices])
        if self.kind == "firstlast":
            return str(FirstLast(self.first, self.last)) if self.first + self.last else FirstLast(0, 0)
        if self.kind == "all":
            return "all" if self.first == 0 else AllTokens()
        return TokenMatch(self.pattern) if self.first else f"match:{self.pattern}"

    def slots(self, ids: list[int], example: int, width: int) -> list[tuple[int, int | None]]:
        """For one unpadded example: (the slot's index as the source reads it, negative from the end;
        the base token written, None if masked) per slot, in slot order. ``width`` is the batch's padded width (the slot count of ``all``)."""
        n = len(ids)
        if self.kind in ("indices", "rows"):
            row = self.indices if self.kind == "indices" else self.indices[example]
            return [(i, i % n) for i in row]
        if self.kind == "firstlast":
            # A token among both the first and the last ones keeps only its last slot.
            firsts = [(j, j if j < n - self.last else None) for j in range(self.first)]
            return firsts + [(j - self.last, n - self.last + j) for j in range(self.last)]  # source: from its end
        if self.kind == "all":
            return [(j, j if j < n else None) for j in range(width)]
        regex = re.compile(self.pattern)
        return [(t, t) for t, i in enumerate(ids) if regex.fullmatch(WORDS[i])]


def source_index(rel: int, n: int) -> int:
    return rel % n  # negative indices count from the end, as for the base


def formula(kind: str, iv, b: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
    """The intervention's formula on one token's (d,) vector, written out from its docstring."""
    if kind == "patch":
        return s.clone()
    if kind in ("patch_dims", "zero_dims"):
        new = b.clone()
        for c in iv.dims_list:
            new[c] = s[c] if kind == "patch_dims" else 0.0
        return new
    if kind == "zero":
        return torch.zeros_like(b)
    if kind == "mean":
        return iv.mean.clone()
    if kind == "add":
        return b + iv.scale * iv.vector
    if kind == "das_lowrank":
        R = iv.rotation.weight.detach()  # (k, d)
        return b + R.T @ (R @ s - R @ b)
    if kind == "das_rotated":
        R = iv.rotation.weight.detach()  # (d, d)
        rb, rs = R @ b, R @ s
        return R.T @ torch.cat([rs[: iv.k], rb[iv.k:]])
    if kind == "das_boundless":  # eval mode: a hard boundary at round(beta * r)
        R = iv.rotation.weight.detach()  # (r, d)
        m = (torch.arange(iv.max_rank) < iv.size()).float()
        return b + R.T @ (m * (R @ s - R @ b))
    if kind == "loreft":
        R, W, bias = iv.rotation.weight.detach(), iv.learned_source.weight, iv.learned_source.bias
        return b + R.T @ (W @ b + bias - R @ b)
    if kind == "direft":
        return b + iv.proj.weight @ (iv.learned_source.weight @ b + iv.learned_source.bias)
    if kind == "consreft":
        R = iv.rotation.weight.detach()
        return b + R.T @ (iv.learned_source - R @ b)
    if kind == "collect":
        return b.clone()
    raise AssertionError(kind)


def _hook(point, fn):
    """A hand-written hook on the site's module: ``fn(view (T, d)) -> new view`` for one example."""
    def edit(hidden):
        new = hidden.clone()
        view = new[0] if point.head_slice is None else new[0, :, point.head_slice]  # (T, d)
        view[:] = fn(view.clone())
        return new

    if point.kind == "output":
        def post(_m, _args, out):
            if isinstance(out, torch.Tensor):
                return edit(out)
            return (edit(out[0]), *out[1:])
        return point.module.register_forward_hook(post)

    def pre(_m, args, kwargs):
        if args:
            return (edit(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}
    return point.module.register_forward_pre_hook(pre, with_kwargs=True)


@dataclass
class Item:
    """One plan item as the reference applies it."""

    site: Site
    kind: str
    iv: object
    spec: Spec
    source_spec: Spec | None = None

    def plan_item(self) -> PlanItem:
        return PlanItem(self.site, self.spec.selector(), self.iv,
                        source_positions=None if self.source_spec is None else self.source_spec.selector())


@torch.no_grad()
def reference(hm, items: list[Item], bases, sources, width: int):
    """Per example: each source's states read alone (a plain run), then the base run alone with the
    edits hooked in plan order. Returns the logits (T_i, V) per example and, per Collect item, the
    states it saw per example ({slot: (d,)})."""
    points = [hm.layout.hook_point(it.site) for it in items]
    out, collected = [], {n: [] for n, it in enumerate(items) if it.kind == "collect"}
    for e, ids in enumerate(bases):
        src = None if sources is None else (sources[0] if len(sources) == 1 else sources[e])
        src_states = {}
        if src is not None:
            handles = [_hook(points[n], lambda view, n=n: src_states.setdefault(n, view.clone()))
                       for n, it in enumerate(items) if it.kind in SOURCE_KINDS]
            try:
                hm.model(input_ids=torch.tensor([src]), use_cache=False)
            finally:
                for h in handles:
                    h.remove()

        def editor(n: int, it: Item):
            slots = it.spec.slots(ids, e, width)
            src_rel = None if it.source_spec is None else [r for r, _ in it.source_spec.slots(src, e, width)]
            seen = {}

            def edit(view):  # (T, d)
                new = view.clone()
                for j, (rel, pos) in enumerate(slots):
                    if pos is None:
                        continue
                    s = None
                    if n in src_states:
                        s = src_states[n][source_index(rel if src_rel is None else src_rel[j], len(src))]
                    seen[j] = view[pos].clone()
                    new[pos] = formula(it.kind, it.iv, view[pos], s)
                return new
            if n in collected:
                collected[n].append(seen)
            return edit

        handles = [_hook(points[n], editor(n, it)) for n, it in enumerate(items)]
        try:
            out.append(hm.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0])  # (T_i, V)
        finally:
            for h in handles:
                h.remove()
    return out, collected


# ---- building the random case ---------------------------------------------------------------
def pad(rows: list[list[int]], side: str) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, span] = torch.tensor(r)
        mask[i, span] = 1
    return {"input_ids": ids, "attention_mask": mask}


def build(kind: str, d: int, seed: int):
    """The intervention with random parameters (eval mode); ``dims_list`` kept for the reference."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dims = sorted(set(torch.randint(0, d, (3,), generator=g).tolist()))
    if kind == "patch":
        iv = Patch()
    elif kind == "patch_dims":
        iv = Patch(dims)
    elif kind == "zero":
        iv = ZeroAblation()
    elif kind == "zero_dims":
        iv = ZeroAblation(dims)
    elif kind == "mean":
        iv = MeanAblation(torch.randn(d, generator=g))
    elif kind == "add":
        iv = AddVector(torch.randn(d, generator=g), scale=float(torch.rand(1, generator=g) * 4 - 2))
    elif kind == "das_lowrank":
        iv = LowRankRotatedSpaceIntervention(d, int(torch.randint(1, min(d, 6) + 1, (1,), generator=g)))
    elif kind == "das_rotated":
        iv = RotatedSpaceIntervention(d, int(torch.randint(0, d + 1, (1,), generator=g)))
    elif kind == "das_boundless":
        iv = BoundlessRotatedSpaceIntervention(d, max_rank=min(d, 6), init_size=int(torch.randint(1, min(d, 6) + 1, (1,), generator=g)))
    elif kind == "collect":
        iv = Collect()
    elif kind in ("loreft", "direft", "consreft"):
        iv = {"loreft": LoReFT, "direft": DiReFT, "consreft": ConsReFT}[kind](d, int(torch.randint(1, 5, (1,), generator=g)))
        with torch.no_grad():
            for p in iv.parameters():  # random values everywhere (ConsReFT's b and biases start at 0)
                if p.dim() == 1:
                    p.normal_(generator=g)
    else:
        raise AssertionError(kind)
    iv.dims_list = dims
    return iv.eval()


words = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=7)


def _distinct(slots) -> bool:
    written = [pos for _, pos in slots if pos is not None]
    return len(written) == len(set(written))


def draw_site(draw, hm) -> Site:
    layer = draw(st.integers(0, hm.n_layers - 1))
    component = draw(st.sampled_from(COMPONENTS))
    return Site(layer, "z", head=draw(st.integers(0, 3))) if component == "head_z" else Site(layer, component)


def draw_spec(draw, spec_kinds, bases, sources) -> Spec:
    """A base position spec valid for every base (and source) example, writing each token once."""
    width = max(len(b) for b in bases)
    shortest = min(len(r) for r in bases + (sources or []))
    spec_kind = draw(st.sampled_from(spec_kinds))
    if spec_kind == "indices":
        spec = Spec("indices", tuple(draw(st.lists(st.integers(-shortest, shortest - 1), min_size=1, max_size=3))))
    elif spec_kind == "rows":
        rows = []
        for e, b in enumerate(bases):
            n = min(len(b), len(sources[e])) if sources else len(b)
            rows.append(tuple(draw(st.lists(st.integers(-n, n - 1), min_size=0, max_size=3))))
        spec = Spec("rows", tuple(rows))
    elif spec_kind == "firstlast":
        first = draw(st.integers(0, min(shortest, 3)))
        last = draw(st.integers(0 if first else 1, min(shortest, 3)))
        spec = Spec("firstlast", first=first, last=last)
    elif spec_kind == "all":
        spec = Spec("all", first=draw(st.integers(0, 1)))
    else:
        spec = Spec("match", pattern=draw(st.sampled_from(PATTERNS)), first=draw(st.integers(0, 1)))
    assume(all(_distinct(spec.slots(b, e, width)) for e, b in enumerate(bases)))  # one write per token
    return spec


@st.composite
def cases(draw, extra_items: int = 0):
    """A family, batch, sources and one item of any kind; ``extra_items`` source-free items
    (Collect among them) placed before or after it, at any site (the same module too)."""
    family = draw(st.sampled_from(FAMILIES))
    hm = model(family)
    site = draw_site(draw, hm)
    kind = draw(st.sampled_from(SOURCE_KINDS + FREE_KINDS))
    needs_source = kind in SOURCE_KINDS
    bases = draw(st.lists(words, min_size=1, max_size=4))
    broadcast = needs_source and draw(st.booleans())
    spec_kinds = ["indices", "firstlast", "all"] + ([] if broadcast else ["rows"]) + ([] if needs_source else ["match"])
    width = max(len(b) for b in bases)
    sources = None
    if needs_source:
        n_src = 1 if broadcast else len(bases)
        if draw(st.booleans()):  # the same lengths (the widest base for a broadcast source): 'all' fits
            lengths = [width] if broadcast else [len(b) for b in bases]
            sources = [draw(st.lists(st.sampled_from(TOKENS), min_size=n, max_size=n)) for n in lengths]
        else:
            sources = draw(st.lists(words, min_size=n_src, max_size=n_src))
            spec_kinds.remove("all")
    seed = draw(st.integers(0, 2**16))
    spec = draw_spec(draw, spec_kinds, bases, sources)
    source_spec = None
    if needs_source and spec.kind in ("indices", "firstlast") and draw(st.booleans()):
        k = len(spec.slots(bases[0], 0, width))
        short_src = min(len(s) for s in sources)
        source_spec = Spec("indices", tuple(draw(st.lists(st.integers(-short_src, short_src - 1),
                                                          min_size=k, max_size=k))))
    items = [Item(site, kind, build(kind, hm.site_size(site), seed), spec, source_spec)]
    for n in range(extra_items):
        other = site if draw(st.booleans()) else draw_site(draw, hm)
        other_kind = draw(st.sampled_from(FREE_KINDS + ("collect",)))
        other_spec = draw_spec(draw, ["indices", "firstlast", "all", "rows", "match"], bases, None)
        extra = Item(other, other_kind, build(other_kind, hm.site_size(other), seed + 1 + n), other_spec)
        items.insert(draw(st.integers(0, len(items))), extra)
    return dict(family=family, items=items, bases=bases, sources=sources,
                side=draw(st.sampled_from(["left", "right"])), source_side=draw(st.sampled_from(["left", "right"])))


def check(case) -> None:
    hm = model(case["family"])
    items, bases, sources = case["items"], case["bases"], case["sources"]
    width = max(len(b) for b in bases)
    batch = pad(bases, case["side"])
    for it in items:
        if it.kind == "collect":
            it.iv.values.clear()
    with torch.no_grad():
        run_sources = None if sources is None else [pad(sources, case["source_side"])]
        batched = hm.run(batch, [it.plan_item() for it in items], sources=run_sources)  # (B, T, V)
    expected, collected = reference(hm, items, bases, sources, width)
    for e, want in enumerate(expected):
        real = batch["attention_mask"][e].bool()
        torch.testing.assert_close(batched[e][real], want, atol=ATOL, rtol=ATOL,
                                   msg=lambda m, e=e: f"example {e} of {case}: {m}")
    for n, per_example in collected.items():
        values = items[n].iv.values
        assert len(values) == 1, f"Collect saw {len(values)} calls, expected one"  # (B, k, d)
        for e, seen in enumerate(per_example):
            for j, state in seen.items():
                torch.testing.assert_close(values[0][e, j], state, atol=ATOL, rtol=ATOL)


@SETTINGS
@given(cases())
def test_batched_plans_equal_the_per_example_reference(case):
    check(case)


@settings(SETTINGS, max_examples=60)
@given(cases(extra_items=2))
def test_plans_of_several_items_equal_the_reference(case):
    check(case)


# ---- the reference itself moves the logits (so equality above is not vacuous) ----------------
@pytest.mark.parametrize("kind", SOURCE_KINDS + FREE_KINDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_each_kind_changes_the_output_and_matches(family, kind):
    hm = model(family)
    site = Site(1, "resid_post")
    bases = [[3, 9, 25, 13, 7], [20, 21, 22]]  # "the of , Paris is", "I thought it"
    sources = [[4, 30, 31, 32, 33], [14, 15, 16]] if kind in SOURCE_KINDS else None
    iv = build(kind, hm.site_size(site), seed=3)
    if kind == "das_rotated":
        iv.k = max(iv.k, 4)
    items = [Item(site, kind, iv, Spec("firstlast", first=1, last=1))]
    expected, _ = reference(hm, items, bases, sources, 5)
    with torch.no_grad():
        plain = [hm.model(input_ids=torch.tensor([b])).logits[0] for b in bases]
    assert any(not torch.allclose(p, x, atol=1e-4) for p, x in zip(plain, expected)), "the edit changed nothing"
    check(dict(family=family, items=items, bases=bases, sources=sources, side="left", source_side="right"))


def test_collect_reference_sees_what_the_workbench_collects():
    """Collect after a ZeroAblation at the same module sees zeros at the ablated token."""
    hm = model("llama")
    site = Site(1, "mlp_act")
    zero = Item(site, "zero", build("zero", 48, 0), Spec("indices", (-1,)))
    collect = Item(site, "collect", build("collect", 48, 0), Spec("firstlast", first=1, last=1))
    case = dict(family="llama", items=[zero, collect], bases=[[3, 4, 5], [6, 7]], sources=None,
                side="right", source_side="left")
    check(case)
    assert torch.equal(collect.iv.values[0][:, 1], torch.zeros(2, 48))
    assert collect.iv.values[0][:, 0].abs().sum() > 0


# ---- found by the property test (its strategy now skips such specs; see _distinct) ------------
@pytest.mark.xfail(strict=True, reason="Indices does not mask a token named twice (e.g. [0, -1] on a one-token "
                   "example), unlike FirstLast: the scatter then writes one token twice, in an undefined order "
                   "on CUDA and with doubled gradients, against the README's 'positions never write duplicate "
                   "indices'")
def test_indices_naming_one_token_twice_write_it_once():
    ids, mask = torch.tensor([[0, 7], [5, 6]]), torch.tensor([[0, 1], [1, 1]])  # example 0 has one real token
    pos = Indices([0, -1]).resolve(ids, mask)
    for index, valid in zip(pos.index.tolist(), pos.mask.tolist()):
        written = [i for i, v in zip(index, valid) if v]
        assert len(written) == len(set(written)), f"token written twice: index {index}, mask {valid}"
