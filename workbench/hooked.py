"""The hooked model: a Hugging Face model and its tokenizer, with caching and interventions.

>>> hm = HookedModel(model, tokenizer)                                   # doctest: +SKIP
>>> plan = [PlanItem("L3.resid_post", "l1", Patch())]                    # doctest: +SKIP
>>> logits = hm.run("Paris is in", plan, sources=["Rome is in"])         # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal, Mapping, Sequence

import torch
from torch import nn

from .adapters import HookPoint, ModelLayout
from .devices import module_device, place
from .hooks import StopForward, add_hook, gather, hooks_installed, scatter_
from .plan import PlanItem
from .positions import AllTokens, Positions, parse_positions
from .sites import Site

Inputs = str | Sequence[str] | Mapping[str, torch.Tensor]
GENERATION_MODES = ("prompt", "every_step")


@dataclass
class _Resolved:
    """A plan item bound to its hook point, with the source states it will write."""

    item: PlanItem
    point: HookPoint
    source: torch.Tensor | None = None  # (B_src, k, d)
    positions: Positions | None = None  # for the current forward call; None = skip this call
    device: torch.device | None = None  # where the site's hidden states live


def _past_length(kwargs: dict) -> int:
    """Tokens already in the KV cache of this call (0 in a prefill or an uncached call).

    transformers 5 passes the cache as ``cache`` (``past_key_values`` before); generate may omit
    the attention mask when nothing is padded, so the mask's width cannot tell a decode step.
    """
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    return int(cache[0][0].shape[-2]) if len(cache) else 0  # legacy tuple of (key, value)


class HookedModel:
    """Wraps a Hugging Face model (any supported family) and its tokenizer."""

    def __init__(self, model: nn.Module, tokenizer=None, name: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.layout = ModelLayout(model)
        params = inspect.signature(model.forward).parameters
        self._takes_position_ids = "position_ids" in params
        # Hooks live on the one shared module: model calls from several threads (app sessions)
        # take turns, and an intervene block holds it throughout (reentrant for nested calls).
        self.lock = threading.RLock()

    # ---- basics -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embeddings' device (the first of a dispatched model's).

        A model on the meta device (nnsight's weightless stand-in for one run on NDIF) takes its
        inputs on the CPU: they travel with the request.
        """
        embeddings = self.model.get_input_embeddings()
        weight = getattr(embeddings, "weight", None)
        device = weight.device if weight is not None else next(self.model.parameters()).device
        return torch.device("cpu") if device.type == "meta" else device

    @property
    def dtype(self) -> torch.dtype:
        """The model's floating dtype (its input embeddings')."""
        weight = getattr(self.model.get_input_embeddings(), "weight", None)
        return weight.dtype if weight is not None else next(self.model.parameters()).dtype

    def device_of(self, site: Site | str) -> torch.device:
        """The device of ``site``'s hidden states: its own layer's device when the model is
        dispatched over several devices (``device_map``). A block's input (``resid_pre``) lives
        where the previous block (or, for layer 0, the embeddings) left it.

        >>> hm.device_of("L3.resid_post")                                 # doctest: +SKIP
        device(type='cuda', index=1)
        """
        site = Site.parse(site)
        point = self.layout.hook_point(site)
        if site.component == "resid_pre":
            return self.device if site.layer == 0 else module_device(self.layout.blocks[site.layer - 1], self.device)
        return module_device(point.module, module_device(self.layout.blocks[site.layer], self.device))

    def place(self, intervention: nn.Module, site: Site | str) -> nn.Module:
        """Move ``intervention`` (parameters and buffers, not their dtype) to ``site``'s device, once.

        Installing a plan does this for every item; trainers call it before building optimizers.

        >>> das = hm.place(LowRankRotatedSpaceIntervention(576, 8), "L8.resid_post")   # doctest: +SKIP
        """
        return place(intervention, self.device_of(site))

    @property
    def n_layers(self) -> int:
        return self.layout.n_layers

    def site_size(self, site: Site | str) -> int:
        """Hidden size an intervention at ``site`` sees (d_model, MLP width or head size)."""
        return self.layout.hook_point(Site.parse(site)).size

    def tokenize(self, inputs: Inputs, padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Strings (or an already tokenized mapping) -> ``input_ids``/``attention_mask`` on device."""
        if isinstance(inputs, Mapping):
            ids = torch.as_tensor(inputs["input_ids"])
            mask = inputs.get("attention_mask")
            mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask)
            self._check_length(ids.shape[-1])
            return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        if self.tokenizer is None:
            raise ValueError("this HookedModel has no tokenizer: pass input_ids/attention_mask instead of text")
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts or any(not t for t in texts):
            raise ValueError(f"empty input among {texts!r}: give at least one non-empty text")
        tok = self.tokenizer
        saved = tok.padding_side, tok.pad_token
        try:  # the tokenizer is the user's: leave its padding settings as they were
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            tok.padding_side = padding_side
            enc = tok(texts, return_tensors="pt", padding=True)
        finally:
            tok.padding_side = saved[0]
            if saved[1] is None:
                tok.pad_token = None
        self._check_length(enc["input_ids"].shape[-1])
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    @property
    def max_length(self) -> int | None:
        """The model's context length in tokens (``max_position_embeddings`` / ``n_positions``), if known."""
        config = self.model.config
        for name in ("max_position_embeddings", "n_positions"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def _check_length(self, length: int, new_tokens: int = 0) -> None:
        limit = self.max_length
        if limit is not None and length + new_tokens > limit:
            what = f"{length} tokens" + (f" + max_new_tokens {new_tokens}" if new_tokens else "")
            raise ValueError(f"input of {what} is longer than the model's context of {limit} tokens "
                             f"(max_position_embeddings); shorten the prompt" + (" or generate fewer tokens" if new_tokens
                             else " or split it into pieces of at most {limit} tokens".format(limit=limit)))

    def _pad_id(self) -> int | None:
        """The id used for padding: the tokenizer's pad token, else its EOS (as ``tokenize`` pads)."""
        tok = self.tokenizer
        if tok is None:
            return None
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def forward(self, inputs: Inputs, **kwargs):
        """The plain model call; with padding, position ids follow the attention mask so that a
        padded row computes what it would alone."""
        batch = self.tokenize(inputs)
        mask = batch["attention_mask"]
        if self._takes_position_ids and "position_ids" not in kwargs and not bool(mask.all()):
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        with self.lock:
            return self.model(**batch, **kwargs)

    # ---- reading ------------------------------------------------------------------------
    @torch.no_grad()
    def cache(self, inputs: Inputs, sites: Sequence[Site | str], positions=None) -> dict[Site, torch.Tensor]:
        """Activations at ``sites``: (B, T, d) each, or (B, k, d) at ``positions``.

        The forward stops after the highest site's layer.

        >>> acts = hm.cache("Paris is", ["L0.resid_post", "L1.mlp_act"])   # doctest: +SKIP
        """
        batch = self.tokenize(inputs)
        sites = [Site.parse(s) for s in sites]
        points = {site: self.layout.hook_point(site) for site in sites}
        selector = AllTokens() if positions is None else parse_positions(positions)
        resolved = selector.resolve(batch["input_ids"], batch["attention_mask"], self.tokenizer)
        found: dict[Site, torch.Tensor] = {}

        def reader(site: Site):
            def read(hidden: torch.Tensor) -> None:
                point = points[site]
                if positions is None:
                    found[site] = (hidden if point.head_slice is None else hidden[..., point.head_slice]).detach().clone()
                else:
                    found[site] = gather(hidden, point, resolved)
                if len(found) == len(points):
                    raise StopForward
            return read

        installers = [lambda s=s: add_hook(points[s].module, points[s].kind, reader(s)) for s in points]
        with self.lock, hooks_installed(installers):
            try:
                self.forward(batch, use_cache=False)
            except StopForward:
                pass
        return {site: found[site] for site in sites}

    # ---- intervening --------------------------------------------------------------------
    def _resolve_plan(self, plan: Sequence[PlanItem]) -> list[_Resolved]:
        """Bind items to hook points; move each intervention and its source values to the site's
        device once, here (never per call)."""
        resolved = []
        for item in plan:
            point = self.layout.hook_point(item.site)
            size = item.intervention.hidden_size
            if size is not None and size != point.size:
                raise ValueError(
                    f"{type(item.intervention).__name__} at {item.site} has hidden size {size}, but "
                    f"the site has {point.size}; build the intervention with hidden size {point.size}"
                )
            device = self.device_of(item.site)
            place(item.intervention, device)
            source = None if item.source_values is None else item.source_values.to(device)
            resolved.append(_Resolved(item, point, source, device=device))
        return resolved

    @torch.no_grad()
    def _read_sources(self, resolved: list[_Resolved], sources: Sequence[Inputs]) -> None:
        """One source forward per source input, stopped after the highest layer needed."""
        needed = [r for r in resolved if r.item.reads_source_run]
        for index in sorted({r.item.source for r in needed}):
            if not 0 <= index < len(sources):
                raise ValueError(f"plan reads source {index}, but {len(sources)} source input(s) were given; "
                                 f"pass one input per source index (sources=[...]) or set PlanItem(source=...) lower")
            batch = self.tokenize(sources[index])
            group = [r for r in needed if r.item.source == index]
            remaining = {id(r) for r in group}

            def reader(r: _Resolved):
                selector = r.item.source_positions or r.item.positions
                pos = selector.resolve(batch["input_ids"], batch["attention_mask"], self.tokenizer)
                def read(hidden: torch.Tensor) -> None:
                    r.source = gather(hidden, r.point, pos)  # (B_src, k, d)
                    remaining.discard(id(r))
                    if not remaining:
                        raise StopForward
                return read

            with hooks_installed([lambda r=r: add_hook(r.point.module, r.point.kind, reader(r)) for r in group]):
                try:
                    self.forward(batch, use_cache=False)
                except StopForward:
                    pass

    @contextmanager
    def intervene(self, plan: Sequence[PlanItem], sources: Inputs | Sequence[Inputs] | None = None,
                  mode: str = "prompt") -> Iterator["HookedModel"]:
        """Install the plan's hooks for every model call inside the block; removed on exit.

        Positions resolve once per call from that call's ``input_ids``/``attention_mask``. During
        generation, ``mode="prompt"`` (default, as in ReFT) intervenes on the prompt in the prefill
        only; ``mode="every_step"`` also intervenes on each generated token (source-free
        interventions only).

        >>> with hm.intervene(plan, sources=["Rome is in"]):              # doctest: +SKIP
        ...     out = hm.forward("Paris is in")
        """
        if mode not in GENERATION_MODES:
            raise ValueError(f"mode {mode!r}: expected one of {GENERATION_MODES}; use mode='prompt' (the default)")
        with self.lock:
            yield from self._intervene(plan, sources, mode)

    def _intervene(self, plan, sources, mode) -> Iterator["HookedModel"]:
        resolved = self._resolve_plan(plan)
        if mode == "every_step" and any(r.item.intervention.needs_source for r in resolved):
            raise ValueError("mode='every_step' applies only source-free interventions (steering, ReFT)")
        if any(r.item.reads_source_run for r in resolved):
            if sources is None:
                raise ValueError("the plan has interventions that read a source run: pass sources=")
            if isinstance(sources, (str, Mapping)):
                sources = [sources]
            self._read_sources(resolved, list(sources))

        def on_call(_module, args, kwargs) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None:
                raise ValueError("intervene needs input_ids in the model call (inputs_embeds is not supported)")
            mask = kwargs.get("attention_mask")
            mask = torch.ones_like(ids) if mask is None else mask
            decoding = _past_length(kwargs) > 0  # a cached generation step: only new tokens
            memo: dict[int, Positions] = {}  # items sharing a selector resolve it once per call
            for r in resolved:
                if decoding:
                    step = torch.full((ids.shape[0], 1), ids.shape[1] - 1, device=ids.device)
                    r.positions = Positions(step, torch.ones_like(step, dtype=torch.bool)) if mode == "every_step" else None
                    continue
                key = id(r.item.positions)
                if key not in memo:
                    memo[key] = r.item.positions.resolve(ids, mask, self.tokenizer)
                    memo[key].all_valid  # noqa: B018  one host sync per call, not one per layer
                r.positions = memo[key]
                if r.source is not None and r.source.shape[0] not in (1, ids.shape[0]):
                    raise ValueError(
                        f"source batch size {r.source.shape[0]} differs from the base's {ids.shape[0]} "
                        f"at {r.item.site}; give one source per base example (or a single source)"
                    )

        def applier(r: _Resolved):
            def apply(hidden: torch.Tensor) -> torch.Tensor | None:
                if r.positions is None:
                    return None
                if hidden.device != r.device:  # a dispatch the layout did not predict: move once
                    r.device = hidden.device
                    place(r.item.intervention, hidden.device)
                    r.source = None if r.source is None else r.source.to(hidden.device)
                base = gather(hidden, r.point, r.positions)  # (B, k, d)
                source = None
                if r.source is not None:
                    source = r.source.expand(base.shape[0], -1, -1) if r.source.shape[0] == 1 else r.source
                    if source.shape[1] != base.shape[1]:
                        raise ValueError(
                            f"at {r.item.site}: {source.shape[1]} source positions for {base.shape[1]} "
                            f"base positions; choose source_positions with the same count"
                        )
                new = r.item.intervention(base, source)
                if r.item.intervention.is_identity:
                    return None
                if r.point.kind == "input" and hidden.requires_grad and torch.is_grad_enabled():
                    # A module's input may be saved for backward by the op that made it (SDPA and
                    # flash attention keep their output, which o_proj's input views when T = 1):
                    # write into a fresh tensor instead of editing the saved one in place.
                    hidden = hidden.clone()
                    scatter_(hidden, r.point, r.positions, new)
                    return hidden
                scatter_(hidden, r.point, r.positions, new)
                return None
            return apply

        installers = [lambda: self.model.register_forward_pre_hook(on_call, with_kwargs=True)]
        installers += [lambda r=r: add_hook(r.point.module, r.point.kind, applier(r)) for r in resolved]
        with hooks_installed(installers):
            yield self

    def run(self, inputs: Inputs, plan: Sequence[PlanItem] = (), sources=None,
            backend: Literal["hooks", "nnsight"] = "hooks", remote: bool | Literal["local"] = False,
            **forward_kwargs) -> torch.Tensor:
        """Logits (B, T, V) of ``inputs`` under ``plan`` (extra keyword arguments go to the model).

        ``backend="nnsight"`` runs the same plan as nnsight traces (bit-identical logits locally);
        with ``remote=True`` they execute on NDIF (docs/remote.md); ``remote="local"`` is nnsight's
        offline rehearsal of a remote request (serialized, then run here).

        >>> logits = hm.run("Paris is in", [PlanItem("L2.resid_pre", [0], Patch())], ["Rome is in"])  # doctest: +SKIP
        """
        from .backends import check_backend
        if check_backend(backend, remote) == "nnsight":
            from .backends.nnsight_backend import run_plan
            return run_plan(self, inputs, plan, sources, remote=remote, **forward_kwargs)
        with self.intervene(plan, sources):
            return self.forward(inputs, use_cache=False, **forward_kwargs).logits

    def generate(self, inputs: Inputs, plan: Sequence[PlanItem] = (), sources=None, mode: str = "prompt",
                 max_new_tokens: int = 20, progress: bool = False, **generate_kwargs) -> dict:
        """Generate with interventions; returns ``{"ids": (B, new), "texts": [...]}``.

        Prompts are left-padded. Greedy unless ``do_sample=True`` is passed. ``progress=True``
        shows a bar over the new tokens (generation on a big model or batch takes minutes).

        >>> hm.generate("The capital of France is", max_new_tokens=3)["texts"]   # doctest: +SKIP
        [' Paris.']
        """
        batch = self.tokenize(inputs, padding_side="left")
        self._check_length(batch["input_ids"].shape[1], max_new_tokens)
        pad_id = self._pad_id()
        generate_kwargs.setdefault("do_sample", False)
        if progress:
            from .progress import token_progress
            criteria = list(generate_kwargs.pop("stopping_criteria", None) or [])
            generate_kwargs["stopping_criteria"] = [*criteria, token_progress(max_new_tokens)]
        with self.intervene(plan, sources, mode=mode):
            out = self.model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                                      **generate_kwargs)
        if progress:
            generate_kwargs["stopping_criteria"][-1].close()
        new = out[:, batch["input_ids"].shape[1]:]  # (B, new)
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True) if self.tokenizer is not None else None
        return {"ids": new, "texts": texts}
