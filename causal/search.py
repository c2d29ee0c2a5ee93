"""Alignment search against a causal model on a language model: IIA per variable, layer and position.

An `Alignment` maps one high-level variable to a site, a named position and a featurizer.
`align` derives balanced counterfactual examples from the task's causal model, keeps those the
model answers correctly on both base and source (an interchange means nothing on inputs the
model gets wrong), then trains (DAS, Boundless DAS, DBM) or searches (localist) each alignment
and scores its IIA on held-out examples. Every intervention goes through a workbench plan.

>>> table = align(hm, addition(), ["carry"], layers=[0, 6], positions=["last"],
...               featurizers=[Featurizer("das", k=4), Featurizer("dbm")])      # doctest: +SKIP
>>> alignment_heatmap(table)                                                   # doctest: +SKIP
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from plotly.subplots import make_subplots
import plotly.graph_objects as go
from tqdm.auto import tqdm

from workbench.das import CounterfactualData, TrainConfig, evaluate, source_states, train_alignment
from workbench.data.queries import predict_next
from workbench.hooked import HookedModel
from workbench.runs import atomic_write
from workbench.sites import Site

from .counterfactuals import counterfactual_examples, first_token, lm_data
from .featurizers import DifferentiableMask, Featurizer, build
from .tasks import LMTask
from .train import MaskConfig, train_mask


@dataclass(frozen=True)
class Alignment:
    """A high-level variable's claimed home: a site, a named position and a featurizer.

    >>> str(Alignment("carry", Site(3, "resid_post"), "last", Featurizer("das", k=4)))
    'carry -> L3.resid_post @ last (das k=4)'
    """

    variable: str
    site: Site
    position: str
    featurizer: Featurizer

    def __str__(self) -> str:
        return f"{self.variable} -> {self.site} @ {self.position} ({self.featurizer.label})"


@dataclass(frozen=True)
class SearchConfig:
    """Sizes and training settings of a search (saved with the run)."""

    n_train: int = 128  # examples per variable after filtering, balanced over changed / unchanged
    n_test: int = 64
    oversample: int = 4  # derive this many times more, since the model gets some wrong
    seed: int = 0
    epochs: int = 2
    batch_size: int = 16
    lr: float = 1e-2  # DAS; DBM uses mask_lr
    mask_lr: float = 1e-1
    sparsity: float = 0.05  # DBM
    localist_candidates: int = 16  # single neurons tried by the localist search at LM scale
    require_correct: bool = True  # keep only examples the model answers right (off: tiny random test models)

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test", "oversample", "epochs", "batch_size", "localist_candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}; e.g. {name}=1")


def correct_examples(hm: HookedModel, task: LMTask, variable: str, config: SearchConfig) -> tuple[pd.DataFrame, dict]:
    """Balanced derived examples for ``variable`` on which the model answers base and source right.

    Returns (table of ``n_train + n_test`` rows, or fewer when too few pass, and counts).
    """
    wanted = config.n_train + config.n_test
    table = counterfactual_examples(task.model, [variable], wanted * config.oversample, seed=config.seed)
    tok, output = hm.tokenizer, task.model.output
    prompts: dict[str, list[int]] = {}
    answers: dict[str, int] = {}

    def key(inputs: dict) -> str:
        text = task.render(inputs)[0]
        if text not in prompts:
            prompts[text] = tok(text)["input_ids"]
            answers[text] = first_token(tok, task.answer(task.model.run(inputs)[output]))
        return text

    base_keys = [key(b) for b in table["base"]]
    source_keys = [key(next(iter(s.values()))) for s in table["sources"]]
    texts = list(prompts)
    predicted = dict(zip(texts, predict_next(hm, [prompts[t] for t in texts]).tolist()))
    right = {t: predicted[t] == answers[t] for t in texts}
    keep = [(right[b] and right[s]) or not config.require_correct for b, s in zip(base_keys, source_keys)]
    kept = table[keep]
    half = {True: config.n_train // 2 + config.n_test // 2, False: wanted - config.n_train // 2 - config.n_test // 2}
    parts = [kept[kept["changed"] == flag].head(half[flag]) for flag in (True, False)]
    n = min(len(p) for p in parts)  # balanced even when one kind runs short
    rng = random.Random(config.seed)
    rows = pd.concat([parts[0].head(n), parts[1].head(n)])
    rows = rows.iloc[rng.sample(range(len(rows)), len(rows))].reset_index(drop=True)
    counts = {"derived": len(table), "prompts": len(texts), "prompt_accuracy": sum(right.values()) / max(1, len(texts)),
              "kept": int(sum(keep)), "used": len(rows)}
    return rows, counts


def _split(rows: pd.DataFrame, n_train: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_train = min(n_train, len(rows) * 2 // 3)  # keep a test part when examples run short
    return rows.iloc[:n_train], rows.iloc[n_train:]


def score(hm: HookedModel, alignment: Alignment, train: CounterfactualData, test: CounterfactualData,
          config: SearchConfig) -> dict:
    """Train (or search) one alignment on ``train`` and score it on ``test``: a result row."""
    site, f = alignment.site, alignment.featurizer
    d = hm.site_size(site)
    started = time.time()
    row: dict = {}
    torch.manual_seed(config.seed)
    if f.kind == "localist":
        rng = random.Random(config.seed)
        candidates = rng.sample(range(d), min(config.localist_candidates, d))
        states = source_states(hm, site, train)
        scored = {i: evaluate(hm, site, build("dims", d, dims=[i]), train, states=states).iia for i in candidates}
        best = max(scored, key=scored.get)
        intervention = build("dims", d, dims=[best])
        row["dims"], row["train_iia"] = str([best]), scored[best]
    else:
        intervention = build(f, d, dtype=hm.dtype, device=hm.device_of(site))
        if f.kind in ("das", "boundless"):
            train_alignment(hm, site, intervention, train, None,
                            TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                                        seed=config.seed, progress=False))
            row["size"] = intervention.size() if f.kind == "boundless" else f.k
        elif f.kind == "dbm":
            train_mask(hm, site, intervention, train,
                       MaskConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.mask_lr,
                                  sparsity=f.sparsity or config.sparsity, seed=config.seed))
            row["size"] = len(intervention.selected())
    row["iia"] = evaluate(hm, site, intervention, test).iia
    row["seconds"] = round(time.time() - started, 2)
    return row


def align(hm: HookedModel, task: LMTask, variables: Sequence[str], layers: Sequence[int], positions: Sequence[str],
          featurizers: Sequence[Featurizer], component: str = "resid_post", config: SearchConfig = SearchConfig(),
          cells_file: str | Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Train and score every (variable, featurizer, layer, position) alignment; one row each.

    ``cells_file`` (CSV): finished cells are appended there and skipped when found again, so a
    killed search resumes where it stopped (with the same settings).
    """
    for p in positions:
        if p not in task.positions:
            raise ValueError(f"position {p!r} is not one of task {task.name}'s positions {task.positions}")
    for layer in layers:
        hm.site_size(Site(layer, component))  # names the valid layer range
    done = pd.read_csv(cells_file) if cells_file and Path(cells_file).is_file() else pd.DataFrame()
    finished = {(r.variable, r.featurizer, r.layer, r.position) for r in done.itertuples()} if len(done) else set()
    rows = done.to_dict("records") if len(done) else []
    cells = [(v, f, layer, p) for v in variables for f in featurizers for layer in layers for p in positions]
    bar = tqdm(cells, desc=f"align {task.name}", disable=not progress)
    data: dict[tuple[str, str], tuple[CounterfactualData, CounterfactualData]] = {}
    counts: dict[str, dict] = {}
    for variable, f, layer, position in bar:
        if (variable, f.label, layer, position) in finished:
            continue
        if variable not in counts:
            examples, counts[variable] = correct_examples(hm, task, variable, config)
            if counts[variable]["used"] < 4:
                raise ValueError(f"only {counts[variable]['used']} usable examples for {variable!r}: the model "
                                 f"answers {counts[variable]['prompt_accuracy']:.0%} of {task.name} prompts right; "
                                 f"raise oversample or use a stronger model")
            train_rows, test_rows = _split(examples, config.n_train)
            for p in positions:
                data[(variable, p)] = (lm_data(hm.tokenizer, task, train_rows, p), lm_data(hm.tokenizer, task, test_rows, p))
        train, test = data[(variable, position)]
        site = Site(layer, component)
        bar.set_postfix_str(f"{variable} {f.label} {site} @ {position}")
        row = {"variable": variable, "featurizer": f.label, "kind": f.kind, "layer": layer, "position": position,
               "site": str(site), "train_examples": len(train), "test_examples": len(test),
               **score(hm, Alignment(variable, site, position, f), train, test, config)}
        rows.append(row)
        if cells_file:
            frame = pd.DataFrame(rows)
            atomic_write(cells_file, lambda tmp: frame.to_csv(tmp, index=False))
    table = pd.DataFrame(rows)
    table.attrs["counts"] = counts
    return table


def mib_scores(table: pd.DataFrame) -> pd.DataFrame:
    """MIB's summary per variable, featurizer and position: IIA averaged over layers, and the best
    layer with its IIA.

    >>> t = pd.DataFrame({"variable": ["c"] * 2, "featurizer": ["das"] * 2, "position": ["last"] * 2,
    ...                   "layer": [0, 1], "iia": [0.5, 0.9]})
    >>> row = mib_scores(t).iloc[0]
    >>> float(row.mean_iia), int(row.best_layer), float(row.best_iia)
    (0.7, 1, 0.9)
    """
    keys = ["variable", "featurizer", "position"]
    rows = []
    for key, group in table.groupby(keys, sort=False):
        best = group.loc[group["iia"].idxmax()]
        rows.append({**dict(zip(keys, key)), "mean_iia": round(float(group["iia"].mean()), 6),
                     "best_layer": int(best["layer"]), "best_iia": float(best["iia"]), "layers": len(group)})
    return pd.DataFrame(rows)


def alignment_heatmap(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """One layer x position IIA heatmap per (variable, featurizer), side by side (0 to 1 scale)."""
    panels = list(table.groupby(["variable", "featurizer"], sort=False).groups)
    if not panels:
        raise ValueError("the alignment table is empty: nothing to draw")
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[f"{v}: {f}" for v, f in panels],
                        shared_yaxes=True, horizontal_spacing=0.04)
    for i, (variable, featurizer) in enumerate(panels, start=1):
        part = table[(table["variable"] == variable) & (table["featurizer"] == featurizer)]
        grid = part.pivot_table(index="layer", columns="position", values="iia", sort=False)  # (layers, positions)
        fig.add_trace(go.Heatmap(z=grid.values, x=[str(c) for c in grid.columns], y=list(grid.index), zmin=0, zmax=1,
                                 colorscale="Viridis", showscale=i == len(panels), colorbar={"title": "IIA"},
                                 hovertemplate="layer %{y}<br>position %{x}<br>IIA %{z:.3f}<extra></extra>"),
                      row=1, col=i)
    fig.update_yaxes(title_text="layer", row=1, col=1)
    fig.update_layout(title=title or "Interchange-intervention accuracy (IIA)", template="plotly_white")
    return fig


__all__ = ["Alignment", "SearchConfig", "align", "alignment_heatmap", "correct_examples", "mib_scores", "score"]
