"""RAVEL at a budget where DAS converges: DAS vs MDAS vs PCA, probe and mean difference on
Country, Continent and Language, over seeds; the table gives the mean and the spread.

A thin study over ``probes.ravel.run_ravel`` (each seed resumable under ``out/seed<k>/``).

>>> RavelStudy(seeds=(0,)).attributes
('Country', 'Continent', 'Language')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class RavelStudy:
    attributes: tuple[str, ...] = ("Country", "Continent", "Language")
    methods: tuple[str, ...] = ("pca", "probe", "mean_diff", "das", "mdas")
    site: str = "L8.resid_post"
    k: int = 16
    seeds: tuple[int, ...] = (0, 1, 2)
    n_train: int = 256
    epochs: int = 6
    entities: tuple[int, int, int] = (200, 50, 80)


def run_ravel_study(hm, study: RavelStudy, out: str | Path) -> pd.DataFrame:
    """Per method and attribute: mean and std over seeds of Cause, Isolate and Disentangle."""
    from probes.ravel import RavelConfig, run_ravel
    from workbench.das import TrainConfig
    from workbench.data import city_dataset
    from workbench.runs import is_complete, load_run, save_run
    data = city_dataset()
    attributes = tuple(a for a in study.attributes if a in data.attribute_names)
    frames = []
    for seed in study.seeds:
        config = RavelConfig(attributes=attributes, site=study.site, k=study.k, methods=study.methods,
                             entities_per_split=dict(zip(("train", "val", "test"), study.entities)),
                             n_train=study.n_train, seed=seed,
                             train=TrainConfig(epochs=study.epochs, batch_size=16, patience=2))
        folder = Path(out) / f"seed{seed}"
        stamp = {"study": "ravel", "seed": seed, "attributes": list(attributes), "n_train": study.n_train,
                 "epochs": study.epochs, "site": study.site, "k": study.k, "methods": list(study.methods)}
        if is_complete(folder, stamp):
            table = load_run(folder)[0]
        else:
            table, _ = run_ravel(hm, data, config, resume_dir=folder / "resume")
            save_run(folder, table, stamp)
        frames.append(table.assign(seed=seed))
    runs = pd.concat(frames, ignore_index=True)
    metrics = [c for c in ("cause", "isolate", "disentangle") if c in runs.columns]
    keys = [c for c in ("method", "attribute") if c in runs.columns]
    table = runs.groupby(keys, sort=False)[metrics].agg(["mean", "std"])
    table.columns = [f"{m}_{s}" for m, s in table.columns]
    table = table.reset_index()
    save_run(out, table, {"study": "ravel", "seeds": list(study.seeds), "attributes": list(attributes)},
             summary={"table": table.to_dict(orient="records"), "missing_attributes":
                      [a for a in study.attributes if a not in attributes]})
    return table


__all__ = ["RavelStudy", "run_ravel_study"]
