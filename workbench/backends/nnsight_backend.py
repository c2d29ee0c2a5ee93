"""A plan executed inside nnsight traces: the same gather -> intervene -> scatter, run by nnsight.

The hooks backend (`HookedModel.intervene`) and this one share every tensor operation: positions
resolve with the same selectors, `workbench.hooks.gather`/`scatter_` read and write the site's
slices, and the plan's own `Intervention` modules compute the new values. Only who calls them
differs: here, the body of an nnsight trace reads each site's module input or output, edits it
in place and lets the model continue. So local runs give bit-identical logits (tests pin it), and
``remote=True`` hands the same trace to NDIF (docs/remote.md).

Source runs are traces of their own (one per source input), stopped after the last site read,
like the hooks backend's early stop.

>>> logits = run_plan(hm, "Paris is in", [PlanItem("L2.resid_post", "l1", Patch())],
...                   sources=["Rome is in"])                              # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from ..adapters import HookPoint, first_tensor
from ..devices import place
from ..hooks import gather, scatter_
from ..plan import PlanItem
from ..positions import Positions
from ..sites import Site

# Order in which a block's sites run; nnsight reads module values in execution order. In every
# supported family attention runs before the MLP, and a module's input comes before its output.
# Packages NDIF's servers have installed; everything else a trace calls ships by value.
_ON_NDIF = {"torch", "transformers", "nnsight", "peft", "accelerate", "einops", "numpy"}
_ORDER = {"resid_pre": 0, "z": 1, "attn_out": 2, "mlp_act": 3, "mlp_out": 4, "resid_post": 5}


@dataclass
class _Step:
    """One plan item as the trace needs it: no module references (a remote request ships it)."""

    site: Site
    intervention: torch.nn.Module
    point: HookPoint  # module=None: gather/scatter_ need only the head slice
    positions: Positions | None = None  # base positions (base trace) or source positions (source trace)
    source: torch.Tensor | None = None  # (B_src, k, d)
    slot: int = 0  # index of the plan item
    device: torch.device | None = None  # where the intervention and source are; None: not placed yet


@dataclass
class _Access:
    """One module value the trace reads (and may edit): ``path``'s input or output."""

    path: str
    kind: str  # "input" or "output"
    steps: list[_Step]


def nnsight_model(hm):
    """The nnsight ``TransformersModel`` over ``hm.model``, built once and kept on ``hm``.

    nnsight wraps the modules of the model it is given (no copy, so no second set of weights);
    outside a trace they run as before, so the hooks backend is unaffected. A HookedModel made by
    `workbench.backends.remote.remote_model` already carries its wrapper.

    >>> nnsight_model(hm).model.layers[0]                                   # doctest: +SKIP
    """
    wrapped = hm.__dict__.get("_nnsight")
    if wrapped is None:
        if hm.tokenizer is None:
            # TransformersModel builds a pipeline, which needs a tokenizer; the plain envoy traces
            # the same modules (local runs only: NDIF needs a model it can name).
            from nnsight import NNsight
            wrapped = NNsight(hm.model)
        else:
            from nnsight.modeling.transformers import TransformersModel
            # nnsight sets its tokenizer's padding side and pad token: give it a copy, not the user's.
            wrapped = TransformersModel(hm.model, tokenizer=copy.deepcopy(hm.tokenizer), task="text-generation")
        hm.__dict__["_nnsight"] = wrapped
    return wrapped


def _trace(wrapped, remote, kwargs: dict):
    """``wrapped.trace`` for the model call ``kwargs``; ``remote`` goes to nnsight only when set
    (a plain envoy would hand it to the model as an argument)."""
    if not remote:
        return wrapped.trace(**kwargs)
    if not hasattr(wrapped, "to_model_key"):
        raise ValueError(f"remote={remote!r} needs a model NDIF can name; this one was wrapped without a tokenizer "
                         f"({type(wrapped).__name__}): build it with workbench.backends.remote.remote_model(repo_id), "
                         f"or pass remote=False")
    return wrapped.trace(remote=remote, **kwargs)


def _module_paths(hm) -> dict[int, str]:
    """id(module) -> its dotted path in ``hm.model`` (the same path names its nnsight envoy)."""
    paths = hm.__dict__.get("_module_paths")
    if paths is None:
        paths = {id(module): name for name, module in hm.model.named_modules()}
        hm.__dict__["_module_paths"] = paths
    return paths


def _accesses(hm, steps: list[_Step], points: list[HookPoint]) -> list[_Access]:
    """Group steps by module value, in execution order; steps at one value keep plan order."""
    paths = _module_paths(hm)
    groups: dict[tuple[str, str], _Access] = {}
    keyed = sorted(zip(steps, points), key=lambda sp: (sp[0].site.layer, _ORDER[sp[0].site.component], sp[0].slot))
    for step, point in keyed:
        key = (paths[id(point.module)], point.kind)
        groups.setdefault(key, _Access(key[0], key[1], [])).steps.append(step)
    return list(groups.values())


def _value(envoy, kind: str):
    return envoy.input if kind == "input" else envoy.output


def _read_in_trace(wrapped, accesses: list[_Access], found: list) -> None:
    """Inside a trace: gather each step's source slices (B, k, d) into ``found``."""
    for access in accesses:
        hidden = first_tensor(_value(wrapped.get(access.path), access.kind))  # (B, T, W)
        for step in access.steps:
            found.append(gather(hidden, step.point, _on(step.positions, hidden.device)))  # (B, k, d)


def _move(step: _Step, device: torch.device) -> None:
    """Bring a step's intervention, source states and positions to where its site runs, once."""
    place(step.intervention, device)
    step.source = None if step.source is None else step.source.to(device)
    step.positions = None if step.positions is None else _on(step.positions, device)
    step.device = device


def _on(positions: Positions, device: torch.device) -> Positions:
    """``positions`` on ``device`` (a remote request resolves them on the CPU)."""
    if positions.index.device == device:
        return positions
    return Positions(positions.index.to(device), positions.mask.to(device))


def _apply_in_trace(wrapped, accesses: list[_Access]) -> None:
    """Inside a trace: gather -> intervene -> scatter at every access, as the hooks backend does."""
    for access in accesses:
        envoy = wrapped.get(access.path)
        hidden = first_tensor(_value(envoy, access.kind))  # (B, T, W)
        replaced = False
        for step in access.steps:
            if step.device != hidden.device:  # remote (prepared on the CPU) or a dispatch not predicted
                _move(step, hidden.device)
            base = gather(hidden, step.point, step.positions)  # (B, k, d)
            source = None
            if step.source is not None:
                source = step.source.expand(base.shape[0], -1, -1) if step.source.shape[0] == 1 else step.source
            new = step.intervention(base, source)  # (B, k, d)
            if step.intervention.is_identity:
                continue
            if access.kind == "input" and hidden.requires_grad and torch.is_grad_enabled() and not replaced:
                # As in the hooks backend: a module's input may be saved for backward by the op that
                # made it, so edit a fresh copy and hand that to the module instead.
                hidden, replaced = hidden.clone(), True
            scatter_(hidden, step.point, step.positions, new)
        if replaced:
            envoy.input = hidden


def _trace_sources(wrapped, kwargs: dict, accesses: list[_Access], remote: bool) -> list[torch.Tensor]:
    # Kept apart from run_plan so that the trace body's frame holds no HookedModel: a remote
    # request serializes what the body can reach.
    import nnsight
    with _trace(wrapped, remote, kwargs) as tracer:
        found = nnsight.save([])
        _read_in_trace(wrapped, accesses, found)
        tracer.stop()  # nothing after the last site read is needed
    return list(found)


def _trace_base(wrapped, kwargs: dict, accesses: list[_Access], remote: bool) -> torch.Tensor:
    import nnsight
    with _trace(wrapped, remote, kwargs):
        _apply_in_trace(wrapped, accesses)
        logits = nnsight.save(wrapped.output.logits)  # (B, T, V)
    return logits


def _model_kwargs(hm, batch: dict, extra: dict) -> dict:
    """What `HookedModel.forward` passes to the model: position ids follow a padded mask."""
    kwargs = {**batch, "use_cache": False, **extra}
    mask = batch["attention_mask"]
    if hm._takes_position_ids and "position_ids" not in kwargs and not bool(mask.all()):
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
    return kwargs


def _steps(hm, plan: Sequence[PlanItem], local: bool) -> tuple[list[_Step], list[HookPoint]]:
    """Bind items to hook points and check sizes, as the hooks backend does; move each
    intervention (and its given source values) to its site's device once, when running locally."""
    steps, points = [], []
    for slot, item in enumerate(plan):
        point = hm.layout.hook_point(item.site)
        size = item.intervention.hidden_size
        if size is not None and size != point.size:
            raise ValueError(f"{type(item.intervention).__name__} at {item.site} has hidden size {size}, but the "
                             f"site has {point.size}; build the intervention with hidden size {point.size}")
        source, device = item.source_values, None
        if local:
            device = hm.device_of(item.site)
            place(item.intervention, device)
            source = None if source is None else source.to(device)
        steps.append(_Step(item.site, item.intervention, dataclasses.replace(point, module=None), source=source,
                           slot=slot, device=device))
        points.append(point)
    return steps, points


def _read_sources(hm, wrapped, plan, steps, points, sources, remote: bool) -> None:
    """One source trace per source input, reading every site that needs it."""
    needed = [i for i, item in enumerate(plan) if item.reads_source_run]
    if not needed:
        return
    if sources is None:
        raise ValueError("the plan has interventions that read a source run: pass sources=")
    if isinstance(sources, (str, Mapping)):
        sources = [sources]
    sources = list(sources)
    for index in sorted({plan[i].source for i in needed}):
        if not 0 <= index < len(sources):
            raise ValueError(f"plan reads source {index}, but {len(sources)} source input(s) were given; "
                             f"pass one input per source index (sources=[...]) or set PlanItem(source=...) lower")
        batch = hm.tokenize(sources[index])
        group = [i for i in needed if plan[i].source == index]
        readers = []
        for i in group:
            selector = plan[i].source_positions or plan[i].positions
            pos = selector.resolve(batch["input_ids"], batch["attention_mask"], hm.tokenizer)
            readers.append(dataclasses.replace(steps[i], positions=pos))
        accesses = _accesses(hm, readers, [points[i] for i in group])
        found = _trace_sources(wrapped, _model_kwargs(hm, batch, {}), accesses, remote)
        ordered = [step for access in accesses for step in access.steps]
        for step, value in zip(ordered, found):
            steps[step.slot].source = value  # (B_src, k, d), on the site's device


def _bind_positions(hm, plan, steps, batch) -> None:
    """Resolve base positions once per selector and check source shapes before tracing."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    memo: dict[int, Positions] = {}
    for item, step in zip(plan, steps):
        key = id(item.positions)
        if key not in memo:
            memo[key] = item.positions.resolve(ids, mask, hm.tokenizer)
            memo[key].all_valid  # noqa: B018  one host sync per call, before the trace
        step.positions = memo[key]
        if step.source is None:
            continue
        if step.source.shape[0] not in (1, ids.shape[0]):
            raise ValueError(f"source batch size {step.source.shape[0]} differs from the base's {ids.shape[0]} at "
                             f"{item.site}; give one source per base example (or a single source)")
        if step.source.shape[1] != step.positions.index.shape[1]:
            raise ValueError(f"at {item.site}: {step.source.shape[1]} source positions for "
                             f"{step.positions.index.shape[1]} base positions; choose source_positions with the same count")


def run_plan(hm, inputs, plan: Sequence[PlanItem] = (), sources=None, remote: bool = False,
             **forward_kwargs) -> torch.Tensor:
    """Logits (B, T, V) of ``inputs`` under ``plan``, run as nnsight traces (``HookedModel.run``
    with ``backend="nnsight"`` calls this). ``remote=True`` sends each trace to NDIF.

    >>> run_plan(hm, "Paris is in", [PlanItem("L1.mlp_out", "all", ZeroAblation())])  # doctest: +SKIP
    """
    plan = list(plan)
    wrapped = nnsight_model(hm)
    if remote:
        _register_for_remote([item.intervention for item in plan])
    steps, points = _steps(hm, plan, local=not remote)
    _read_sources(hm, wrapped, plan, steps, points, sources, remote)
    batch = hm.tokenize(inputs)
    _bind_positions(hm, plan, steps, batch)
    missing = [str(item.site) for item, step in zip(plan, steps) if item.intervention.needs_source and step.source is None]
    if missing:
        raise ValueError(f"no source states for {missing}: pass sources= or PlanItem(source_values=...)")
    return _trace_base(wrapped, _model_kwargs(hm, batch, forward_kwargs), _accesses(hm, steps, points), remote)


def cache(hm, inputs, sites: Sequence[Site | str], remote: bool = False) -> dict[Site, torch.Tensor]:
    """Activations (B, T, d) at ``sites`` from one nnsight trace, stopped after the last site:
    `HookedModel.cache` as a trace (what the sweeps read their source states with).

    >>> cache(hm, "Paris is", ["L0.resid_post"])[Site(0, "resid_post")].shape   # doctest: +SKIP
    torch.Size([1, 2, 576])
    """
    from ..interventions import Collect
    sites = [Site.parse(s) for s in sites]
    wrapped = nnsight_model(hm)
    if remote:
        _register_for_remote([])
    batch = hm.tokenize(inputs)
    ids = batch["input_ids"]  # (B, T)
    every = Positions(torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1),  # (B, T)
                      torch.ones_like(ids, dtype=torch.bool))
    steps, points = _steps(hm, [PlanItem(site, "all", Collect()) for site in sites], local=False)
    for step in steps:
        step.positions = every
    accesses = _accesses(hm, steps, points)
    found = _trace_sources(wrapped, _model_kwargs(hm, batch, {}), accesses, remote)
    ordered = [step for access in accesses for step in access.steps]
    return {sites[step.slot]: value for step, value in zip(ordered, found)}


def _register_for_remote(interventions: Sequence[torch.nn.Module]) -> None:
    """Ship our code by value with a remote request: NDIF's servers have nnsight and torch, not the
    workbench (nor the package of a user's own Intervention class, e.g. reft)."""
    import nnsight
    packages = {"workbench"} | {type(module).__module__.split(".")[0] for module in interventions}
    for package in sorted(packages - _ON_NDIF):
        nnsight.register(package)
