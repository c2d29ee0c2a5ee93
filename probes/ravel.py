"""RAVEL-style evaluation: Cause, Isolate and Disentangle for subspace methods at one site.

For a target attribute A and a method's subspace for A at the entity's last token:

- **Cause**: IIA on examples whose base prompt asks for A; the answer must become the source's A.
- **Isolate**: IIA on examples whose base prompt asks for another attribute B; it must stay the base's.
- **Disentangle** = (Cause + Isolate) / 2, per attribute, then averaged over attributes.

Methods (same site, same subspace size k): ``pca``, ``probe`` (scikit-learn logistic regression),
``mean_diff``, ``das`` (trained on Cause examples of A) and ``mdas`` (one subspace per attribute,
trained jointly on Cause and Isolate examples). ``full_patch`` (the whole vector) is a reference.

>>> table, details = run_ravel(hm, load_ravel("ravel", "city"), RavelConfig())          # doctest: +SKIP
>>> ravel_figure(table).write_html("ravel.html")                                       # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from workbench import Patch
from workbench.das import (CounterfactualData, LowRankRotatedSpaceIntervention, SubspaceInterchange, TrainConfig,
                           evaluate, source_states, train_alignment, train_multitask)
from workbench.data import RavelData, RavelSetup, prepare_ravel
from workbench.checkpoints import remove_stale_temps
from workbench.hooked import HookedModel
from workbench.runs import atomic_write
from workbench.sites import Site

from .featurizers import mean_difference_basis, pca_basis, probe_basis

METHODS = ("pca", "probe", "mean_diff", "das", "mdas")
REFERENCE = "full_patch"


@dataclass
class RavelConfig:
    """One RAVEL-style comparison (saved beside its results)."""

    attributes: tuple[str, ...] = ("Country", "Continent")
    site: str = "L8.resid_post"  # the entity's last token is read and written here
    k: int = 16  # subspace size for every method (supervised fixed bases may have fewer, see `k_used`)
    methods: tuple[str, ...] = METHODS
    entities_per_split: dict = field(default_factory=lambda: {"train": 120, "val": 40, "test": 60})
    max_templates: int | None = 3  # per attribute and split, to bound the filtering cost
    max_entity_tokens: int | None = None  # 1: single-token entities, so the last entity token is all of it
    n_train: int = 128  # examples per attribute and kind (cause / isolate)
    n_val: int = 32
    n_test: int = 64
    seed: int = 0
    batch_size: int = 32  # filtering and evaluation batches
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, batch_size=16, patience=1))
    reference: bool = True  # also score the full patch (Cause ~ 1, Isolate ~ 0 when the site carries the entity)
    progress: bool = True


def _representations(hm: HookedModel, site: Site, kept: pd.DataFrame, batch_size: int) -> torch.Tensor:
    """States at the entity's last token for each kept query, (n, d)."""
    rows = CounterfactualData(list(kept.ids), [[int(p)] for p in kept.position], list(kept.ids),
                              [[int(p)] for p in kept.position], torch.zeros(len(kept), dtype=torch.long))
    return source_states(hm, site, rows, batch_size)[:, 0]  # (n, d)


def fit_method(method: str, hm: HookedModel, setup: RavelSetup, config: RavelConfig,
               checkpoints: Path | None = None) -> dict:
    """One intervention per attribute for ``method`` (trained or fit on the train split); DAS
    training checkpoints each epoch under ``checkpoints`` (and resumes from there) when given."""
    ckpt = (lambda name: checkpoints / name) if checkpoints is not None else (lambda name: None)  # noqa: E731
    site, k = Site.parse(config.site), config.k
    d = hm.site_size(site)
    train, val = setup.examples["train"], setup.examples["val"]
    if method == REFERENCE:
        return {a: Patch() for a in config.attributes}
    if method in ("pca", "probe", "mean_diff"):
        kept = setup.kept["train"].drop_duplicates(["entity", "template"])
        X = _representations(hm, site, kept, config.batch_size)  # (n, d)
        if method == "pca":
            basis = pca_basis(X, k)
            return {a: SubspaceInterchange(basis) for a in config.attributes}
        fits = {}
        for a in config.attributes:
            values = [setup.data.attributes[e].get(a) for e in kept.entity]
            known = [i for i, v in enumerate(values) if v is not None]
            labels = [values[i] for i in known]
            fit = probe_basis(X[known], labels, k, config.seed) if method == "probe" else \
                mean_difference_basis(X[known], labels, k)
            fits[a] = SubspaceInterchange(fit)
        return fits
    torch.manual_seed(config.seed)
    models = {a: LowRankRotatedSpaceIntervention(d, k, dtype=hm.dtype, device=hm.device_of(site))
              for a in config.attributes}
    if method == "das":
        for a in config.attributes:
            train_alignment(hm, site, models[a], train[a]["cause"], val[a]["cause"], config.train,
                            checkpoint=ckpt(f"das-{a}"))
        return models
    if method == "mdas":
        both = lambda split: {a: CounterfactualData.concat([split[a]["cause"], split[a]["isolate"]])  # noqa: E731
                              for a in config.attributes}
        train_multitask(hm, site, models, both(train), both(val), config.train, checkpoint=ckpt("mdas"))
        return models
    raise ValueError(f"unknown method {method!r}: choose from {METHODS + (REFERENCE,)}")


def score(hm: HookedModel, config: RavelConfig, setup: RavelSetup, interventions: dict, states: dict) -> list[dict]:
    """Cause / Isolate / Disentangle per attribute on the test split."""
    rows = []
    for a, intervention in interventions.items():
        test = setup.examples["test"][a]
        cause = evaluate(hm, config.site, intervention, test["cause"], config.batch_size, states[(a, "cause")])
        isolate = evaluate(hm, config.site, intervention, test["isolate"], config.batch_size, states[(a, "isolate")])
        k_used = getattr(intervention, "k", hm.site_size(config.site))
        rows.append({"attribute": a, "cause": cause.iia, "isolate": isolate.iia,
                     "disentangle": (cause.iia + isolate.iia) / 2, "k_used": k_used,
                     "n_cause": len(test["cause"]), "n_isolate": len(test["isolate"])})
    return rows


def run_ravel(hm: HookedModel, data: RavelData, config: RavelConfig,
              report_to: str | Path | None = None, resume_dir: str | Path | None = None,
              only: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Filter and build the examples, then compare every method (see `compare_methods`).

    Returns the table and ``details`` (the kept-share summary, the kept/dropped ``report``,
    timings, the setup). With ``report_to``, the report is written there before the methods run
    (so a run that then fails still leaves it). With ``resume_dir``, finished methods and DAS
    epochs are kept there, and a run killed at any point and started again resumes from them.
    ``only``: run just these methods (one shard's share; see `compare_methods`).
    """
    started = time.time()
    setup = prepare_ravel(hm, data, config.attributes, {"train": config.n_train, "val": config.n_val,
                          "test": config.n_test}, config.entities_per_split, config.max_templates, config.seed,
                          config.batch_size, config.progress, config.max_entity_tokens)
    prepare_seconds = time.time() - started
    if report_to is not None:
        Path(report_to).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(report_to, lambda tmp: setup.report.to_csv(tmp, index=False))
    table = compare_methods(hm, setup, config, resume_dir, only)
    details = {"summary": setup.summary, "report": setup.report, "prepare_seconds": prepare_seconds,
               "config": asdict(config),
               "setup": setup, "seconds": time.time() - started}
    return table, details


def compare_methods(hm: HookedModel, setup: RavelSetup, config: RavelConfig,
                    resume_dir: str | Path | None = None, only: Sequence[str] | None = None) -> pd.DataFrame:
    """Every method's Cause / Isolate / Disentangle per attribute and their mean, with wall time
    (``fit_seconds``: fitting or training; ``seconds``: that plus scoring on the test split).

    With ``resume_dir``, each finished method's rows are saved there (``<method>.json``, with the
    config they were made with) and reused by a later call with the same config. ``only`` runs a
    subset of the methods under the whole config's stamp, so that shards (``workbench ravel
    --shard``) sharing ``resume_dir`` leave parts the whole run then reuses."""
    resume_dir = Path(resume_dir) if resume_dir is not None else None
    if resume_dir is not None:
        remove_stale_temps(resume_dir, recursive=True)  # what a killed run was writing
    stamp = json.loads(json.dumps(asdict(config), default=str))
    states = {(a, kind): source_states(hm, config.site, setup.examples["test"][a][kind], config.batch_size)
              for a in config.attributes for kind in ("cause", "isolate")}
    for (a, kind), s in states.items():
        if s.shape[0] == 0:
            raise ValueError(f"no test {kind} examples for {a}: the model answers too few test queries; "
                             f"raise entities_per_split or max_templates")
    methods = list(config.methods) + ([REFERENCE] if config.reference else [])
    methods = [m for m in methods if only is None or m in only]
    rows = []
    for method in tqdm(methods, desc="RAVEL methods", unit="method", leave=False, disable=not config.progress):
        done = resume_dir / f"{method}.json" if resume_dir is not None else None
        if done is not None and done.is_file():
            saved = json.loads(done.read_text())
            if saved["config"] == stamp:  # finished before an interruption, with the same settings
                rows += saved["rows"]
                continue
        t0 = time.time()
        fitted = fit_method(method, hm, setup, config, resume_dir)
        fit_seconds = time.time() - t0
        per_attribute = score(hm, config, setup, fitted, states)
        seconds = time.time() - t0
        for row in per_attribute:
            rows.append({"method": method, **row, "fit_seconds": fit_seconds, "seconds": seconds})
        mean = pd.DataFrame(per_attribute)[["cause", "isolate", "disentangle"]].mean()
        rows.append({"method": method, "attribute": "mean", **mean.to_dict(), "fit_seconds": fit_seconds,
                     "seconds": seconds})
        if done is not None:
            mine = json.loads(json.dumps([r for r in rows if r["method"] == method], default=float))
            done.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(done, lambda tmp: Path(tmp).write_text(json.dumps({"config": stamp, "rows": mine})))
    return pd.DataFrame(rows)


def ravel_figure(table: pd.DataFrame):
    """Grouped bars: Cause, Isolate, Disentangle per method (mean over attributes)."""
    import plotly.graph_objects as go

    mean = table[table.attribute == "mean"]
    fig = go.Figure([go.Bar(name=metric.capitalize(), x=mean["method"], y=mean[metric])
                     for metric in ("cause", "isolate", "disentangle")])
    fig.update_layout(barmode="group", yaxis_title="IIA (test)", yaxis_range=[0, 1],
                      title="RAVEL-style Cause / Isolate / Disentangle")
    return fig
