"""Neuron-explanation checks (Huang et al., "Rigorously Assessing Natural Language Explanations
of Neurons"): score an explanation "neuron i at a site fires on concept C" two ways.

- Observational: over the tokens of a text set, precision / recall / F1 of "activation above a
  threshold" against "the token belongs to the concept".
- Interventional: set the neuron high, then low, at every token and measure the change in the
  next-token probability of the concept's tokens; compare with random neurons of the same site
  set to their own high/low values (the same quantiles of their own activations).

A concept is a word list or a regex over token texts (stripped of surrounding whitespace).

>>> c = Concept.parse("words:good,great")
>>> c.matches(" Good"), c.matches("bad")
(True, False)
>>> observational_scores([0.1, 3.0, 2.5, 0.2], [False, True, False, False], threshold=1.0)["precision"]
0.5
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from workbench.hooked import HookedModel
from workbench.interventions import Intervention
from workbench.padding import last_real_index
from workbench.plan import PlanItem
from workbench.sites import Site


@dataclass(frozen=True)
class Concept:
    """A set of token texts: ``words`` (case-insensitive) or a ``regex`` (full match)."""

    words: tuple[str, ...] = ()
    regex: str | None = None

    def __post_init__(self) -> None:
        if bool(self.words) == (self.regex is not None):
            raise ValueError("a concept is either words=(...) or regex=..., exactly one of them")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as error:
                raise ValueError(f"concept regex {self.regex!r} does not compile: {error}; fix the pattern, or use "
                                 f"'words:a,b'") from None

    @classmethod
    def parse(cls, text: str) -> "Concept":
        """``'words:good,great'`` or ``'regex:^(good|great)$'``."""
        kind, _, body = text.partition(":")
        if kind == "words" and body.strip():
            return cls(words=tuple(w.strip().lower() for w in body.split(",") if w.strip()))
        if kind == "regex" and body:
            return cls(regex=body)
        raise ValueError(f"cannot parse concept {text!r}: expected 'words:good,great' or 'regex:<pattern>'")

    def __str__(self) -> str:
        return f"regex:{self.regex}" if self.regex is not None else "words:" + ",".join(self.words)

    def matches(self, token_text: str) -> bool:
        text = token_text.strip()
        if self.regex is not None:
            return re.fullmatch(self.regex, text) is not None
        return text.lower() in self.words

    def token_ids(self, tokenizer) -> list[int]:
        """Every vocabulary id whose decoded text matches the concept (the tokens it predicts)."""
        ids = [i for i in range(len(tokenizer)) if self.matches(tokenizer.decode([i]))]
        if not ids:
            raise ValueError(f"no token of the vocabulary matches {self}; check the words or regex")
        return ids


def observational_scores(activations: Sequence[float], present: Sequence[bool], threshold: float | None = None,
                         quantile: float = 0.99) -> dict:
    """Precision, recall and F1 of ``activation > threshold`` against ``present`` over tokens.

    ``threshold`` defaults to the ``quantile`` of the activations.
    """
    a, c = np.asarray(activations, dtype=float), np.asarray(present, dtype=bool)
    if a.shape != c.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need one activation per token and one concept flag per token, got {a.shape} and {c.shape}")
    if threshold is None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile={quantile} must be strictly between 0 and 1 (e.g. 0.99)")
        threshold = float(np.quantile(a, quantile))
    fires = a > threshold
    tp = int((fires & c).sum())
    precision = tp / fires.sum() if fires.any() else float("nan")
    recall = tp / c.sum() if c.any() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"threshold": float(threshold), "precision": float(precision), "recall": float(recall), "f1": float(f1),
            "tokens": int(a.size), "concept_tokens": int(c.sum()), "firing_tokens": int(fires.sum())}


@torch.no_grad()
def site_activations(hm: HookedModel, site: Site | str, texts: Sequence[str], batch_size: int = 16,
                     progress: bool = False) -> tuple[torch.Tensor, pd.DataFrame]:
    """All neurons' activations at every real token: ((N_tokens, W), tokens table text/position/token)."""
    site = Site.parse(site)
    rows, parts = [], []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc=f"activations at {site}", unit="batch", disable=not progress):
        chunk = list(texts[start:start + batch_size])
        batch = hm.tokenize(chunk)  # right-padded: real tokens first
        acts = hm.cache(batch, [site])[site]  # (b, T, W)
        mask = batch["attention_mask"].bool()  # (b, T)
        parts.append(acts[mask])  # (n, W)
        for b, (ids, keep) in enumerate(zip(batch["input_ids"].tolist(), mask.tolist())):
            rows += [{"text": start + b, "position": t, "token": hm.tokenizer.decode([i])}
                     for t, (i, k) in enumerate(zip(ids, keep)) if k]
    return torch.cat(parts).float(), pd.DataFrame(rows)


class SetNeuron(Intervention):
    """``out = b`` except channel ``index[r]`` of batch row r, set to ``value[r]`` at every gathered position.

    One row per (text, neuron, setting), so many neurons are tested in one forward.
    """

    def __init__(self, index: torch.Tensor, value: torch.Tensor) -> None:
        super().__init__()
        if index.shape != value.shape or index.dim() != 1:
            raise ValueError(f"index and value must be (B,) each, got {tuple(index.shape)} and {tuple(value.shape)}")
        self.register_buffer("index", index.long())
        self.register_buffer("value", value.float())

    def forward(self, base, source=None):
        if base.shape[0] != self.index.shape[0]:
            raise ValueError(f"SetNeuron holds {self.index.shape[0]} rows, the batch has {base.shape[0]}")
        out = base.clone()  # (B, k, W)
        rows = torch.arange(base.shape[0], device=base.device)  # (B,)
        out[rows, :, self.index] = self.value.to(base.dtype)[:, None]  # (B, k)
        return out


@torch.no_grad()
def concept_probability(hm: HookedModel, texts: Sequence[str], concept_ids: Sequence[int], site: Site,
                        neurons: torch.Tensor | None = None, values: torch.Tensor | None = None,
                        batch_size: int = 16, positions: str = "last", fast: bool | None = None,
                        progress: bool = False) -> torch.Tensor:
    """Next-token probability of the concept's tokens for each text, with each neuron set in turn.

    ``positions="last"`` (default): the neuron is set at the text's last token and P(concept) is
    read there. ``positions="all"``: set at every token, P(concept) averaged over all real positions
    (the original definition; about 20x the work of "last").
    With ``neurons``/``values`` (M,), each text runs once per neuron with it set to its value:
    returns (M, N_texts); without, the plain model: (1, N_texts).
    ``fast`` (default: wherever supported) runs only the layers above the site
    (`probes.neurons_fast`); ``fast=False`` runs hooked full forwards (the reference path).
    """
    from .neurons_fast import POSITIONS, fast_concept_probability, fast_supported

    if positions not in POSITIONS:
        raise ValueError(f"positions={positions!r}: expected one of {POSITIONS}")
    if fast is None:
        fast = fast_supported(hm)
    if fast:
        return fast_concept_probability(hm, texts, concept_ids, site, neurons, values, positions,
                                        rows=max(16 * batch_size, 1), progress=progress)
    ids = torch.as_tensor(list(concept_ids))
    m = 1 if neurons is None else len(neurons)
    out = torch.zeros(m, len(texts))
    per_chunk = max(1, batch_size // m)
    selector = "all" if positions == "all" else "l1"
    with tqdm(total=len(texts), desc=f"interventions ({m} settings, full forwards)", unit="text",
              disable=not progress) as bar:
        for start in range(0, len(texts), per_chunk):
            chunk = list(texts[start:start + per_chunk])
            repeated = [t for t in chunk for _ in range(m)]  # text-major: rows (text, neuron)
            batch = hm.tokenize(repeated)
            plan = [] if neurons is None else [PlanItem(site, selector, SetNeuron(neurons.repeat(len(chunk)),
                                                                                    values.repeat(len(chunk))))]
            with hm.intervene(plan):
                logits = hm.forward(batch, use_cache=False).logits.float()  # (b, T, V)
            probs = logits.softmax(-1)[..., ids.to(logits.device)].sum(-1)  # (b, T)
            mask = batch["attention_mask"].float()  # (b, T)
            if positions == "all":
                mean = (probs * mask).sum(1) / mask.sum(1)  # (b,)
            else:
                mean = probs[torch.arange(len(probs)), last_real_index(batch["attention_mask"])]  # (b,)
            out[:, start:start + len(chunk)] = mean.view(len(chunk), m).T.cpu()
            bar.update(len(chunk))
    return out  # (M, N)


def interventional_scores(hm: HookedModel, site: Site | str, index: int, concept: Concept, texts: Sequence[str],
                          activations: torch.Tensor, n_random: int = 20, high_quantile: float = 0.999,
                          low_quantile: float = 0.5, seed: int = 0, batch_size: int = 16,
                          positions: str = "last", fast: bool | None = None, progress: bool = False) -> pd.DataFrame:
    """Effect of setting each neuron high vs low on P(concept tokens), target vs random neurons.

    ``activations`` (N_tokens, W): the site's activations over ``texts`` (`site_activations`);
    each neuron's high/low values are its own ``high_quantile``/``low_quantile`` there.
    Columns: neuron, is_target, high, low, p_high, p_low, effect (p_high − p_low).
    """
    site = Site.parse(site)
    width = activations.shape[1]
    if not 0 <= index < width:
        raise ValueError(f"neuron index {index} out of range for {site}: it has {width} neurons (0-{width - 1}); "
                         f"use an index in that range")
    if not 0 <= n_random < width:
        raise ValueError(f"n_random={n_random}: the site has only {width - 1} other neurons; use --random {width - 1} or fewer")
    others = random_neurons(width, n_random, exclude=[index], seed=seed)
    neurons = torch.cat([torch.tensor([index]), others])  # (M,)
    table = setting_effects(hm, site, neurons, concept, texts, activations, high_quantile, low_quantile,
                            batch_size, positions, fast, progress)
    table.insert(1, "is_target", [True] + [False] * (len(neurons) - 1))
    return table


def random_neurons(width: int, n: int, exclude: Sequence[int] = (), seed: int = 0) -> torch.Tensor:
    """``n`` neurons of ``range(width)`` not in ``exclude``, drawn with ``seed`` (the same ones each run)."""
    g = torch.Generator().manual_seed(seed)
    banned = set(int(i) for i in exclude)
    return torch.tensor([i for i in torch.randperm(width, generator=g).tolist() if i not in banned][:n],
                        dtype=torch.long)


def setting_effects(hm: HookedModel, site: Site, neurons: torch.Tensor, concept: Concept, texts: Sequence[str],
                    activations: torch.Tensor, high_quantile: float = 0.999, low_quantile: float = 0.5,
                    batch_size: int = 16, positions: str = "last", fast: bool | None = None,
                    progress: bool = False) -> pd.DataFrame:
    """p_high, p_low and effect for each of ``neurons`` (M,), all 2M settings in batched passes."""
    part = activations[:, neurons]  # (n, M)
    high = torch.quantile(part, high_quantile, dim=0)  # (M,)
    low = torch.quantile(part, low_quantile, dim=0)  # (M,)
    ids = concept.token_ids(hm.tokenizer)
    settings = torch.cat([neurons, neurons]), torch.cat([high, low])
    probs = concept_probability(hm, texts, ids, site, *settings, batch_size=batch_size, positions=positions,
                                fast=fast, progress=progress).mean(1)  # (2M,)
    m = len(neurons)
    table = pd.DataFrame({"neuron": neurons.tolist(), "high": high.tolist(), "low": low.tolist(),
                          "p_high": probs[:m].tolist(), "p_low": probs[m:].tolist()})
    table["effect"] = table["p_high"] - table["p_low"]
    return table


def neuron_report(hm: HookedModel, site: Site | str, index: int, concept: Concept, texts: Sequence[str],
                  threshold: float | None = None, quantile: float = 0.99, n_random: int = 20, seed: int = 0,
                  out: str | Path | None = None, batch_size: int = 16, positions: str = "last",
                  fast: bool | None = None, progress: bool = False) -> dict:
    """Both scores for one neuron explanation; saves the tables and ``summary.json`` under ``out``.

    >>> neuron_report(hm, "L5.mlp_act", 12, Concept.parse("words:good,great"), texts)   # doctest: +SKIP
    {'observational': {'precision': ..., 'recall': ..., 'f1': ...}, 'interventional': {...}}
    """
    from workbench.runs import save_run

    site = Site.parse(site)
    width = hm.site_size(site)
    if not 0 <= index < width:
        raise ValueError(f"neuron index {index} out of range for {site}: it has {width} neurons (0-{width - 1}); "
                         f"use an index in that range")
    activations, tokens = site_activations(hm, site, texts, batch_size, progress=progress)  # (n, W)
    tokens["activation"] = activations[:, index].tolist()
    tokens["concept"] = tokens["token"].map(concept.matches)
    observed = observational_scores(tokens["activation"], tokens["concept"], threshold, quantile)
    effects = interventional_scores(hm, site, index, concept, texts, activations, n_random, seed=seed,
                                    batch_size=batch_size, positions=positions, fast=fast, progress=progress)
    target, random = effects.iloc[0], effects.iloc[1:]
    report = {"site": str(site), "index": index, "concept": str(concept), "texts": len(texts), "positions": positions,
              "observational": observed,
              "interventional": {"effect": float(target["effect"]), "p_high": float(target["p_high"]),
                                 "p_low": float(target["p_low"]), **against_random(target["effect"], random["effect"])}}
    if out is not None:
        save_run(Path(out) / "tokens", tokens, {"command": "neuron", **report})
        save_run(Path(out) / "interventions", effects, {"command": "neuron", **report})
        save_summary(out, report)
    return report


def against_random(effect: float, random: pd.Series) -> dict:
    """Where ``effect`` falls among the random neurons' effects: their mean and std, z and percentile."""
    spread = float(random.std()) if len(random) > 1 else float("nan")
    mean = float(random.mean()) if len(random) else float("nan")
    return {"random_mean": mean, "random_std": spread,
            "z": float((effect - mean) / spread) if spread else float("nan"),
            "percentile": float((random < effect).mean()) if len(random) else float("nan")}


def save_summary(out: str | Path, summary: dict) -> Path:
    """``out/summary.json``, written atomically (the numbers the command printed)."""
    import json

    from workbench.runs import atomic_write

    path = Path(out) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2, default=str)))
    return path
