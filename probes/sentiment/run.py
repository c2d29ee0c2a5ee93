"""The whole sentiment study as one run: fit directions, patch them per layer, ablate them on SST.

Writes, under ``out``: ``directions/`` (accuracies, cosines, heatmap), ``patching/`` (recovery
per layer), ``sst/`` (accuracy under ablation), ``directions.safetensors`` (the vectors) and a
``summary.json``; each table folder carries the run's config (`workbench.runs.save_run`).

Resumable: run again into the same ``out`` (after a crash or ``kill -9``), the directions are
refit (seeded, so identical) and the patching and SST parts already saved with the same settings
are read back instead of recomputed; every file is written atomically.

>>> summary = run_sentiment(hm, SentimentConfig(layers=(0, 6, 12), sst_limit=50), "runs/sentiment")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from safetensors.torch import save_file

from workbench.das import TrainConfig
from workbench.hooked import HookedModel
from workbench.checkpoints import remove_stale_temps
from workbench.runs import atomic_write, is_complete, load_run, save_run

from workbench.data.reviews import contrast_pairs, toy_movie_reviews
from workbench.data.sst import load_sst, sst_folder
from .experiments import patching_curve, sst_ablation
from .figures import recovery_figure, similarity_heatmap
from .fit import fit_sentiment_directions


@dataclass
class SentimentConfig:
    """Settings of a sentiment run (saved beside every table)."""

    layers: tuple[int, ...] | None = None  # patching-curve layers; None = every `layer_step`-th layer
    layer_step: int = 2
    component: str = "resid_post"
    methods: tuple[str, ...] = ("mean_diff", "probe", "pca", "kmeans", "das")
    das_layers: tuple[int, ...] = ()  # 1-D DAS is trained only here (it costs a backward pass per step)
    das_epochs: int = 3
    das_max_pairs: int | None = 64  # training pairs for DAS (each step is a forward + backward)
    das_lr: float = 0.05  # few steps on CPU: a larger step than the DAS default 1e-2
    compare_layers: tuple[int, ...] = ()  # patching with every method here (default: das_layers)
    position_sets: tuple[str, ...] = ("all", "comma")
    test_fraction: float = 0.3
    max_per_sentiment: int | None = None  # fewer adjectives for quick runs
    sst_folder: str | None = "sst"  # registry dataset name or a folder; None skips the SST ablation
    sst_split: str = "dev"
    sst_limit: int | None = 300
    sst_position_sets: tuple[str, ...] = ("all", "comma")  # the first is the reference for share_of_all
    sst_mean_positions: str = "all"  # tokens the mean-ablation value is averaged over ('non_first' spares the sink)
    ablation_method: str = "mean_diff"
    ablation_value: str = "mean"  # 'mean' (mean ablation) or 'zero' (projection out)
    ablation_layers: tuple[int, ...] | None = None  # None = every layer
    batch_size: int = 32
    seed: int = 0
    extra: dict = field(default_factory=dict)


def run_sentiment(hm: HookedModel, config: SentimentConfig, out: str | Path) -> dict:
    """Run the study and save it under ``out``; returns the summary (also ``summary.json``)."""
    started, out = time.time(), Path(out)
    remove_stale_temps(out, recursive=True)  # what a killed run was writing
    n = hm.n_layers
    layers = list(config.layers) if config.layers is not None else list(range(0, n, config.layer_step))
    ablation_layers = list(config.ablation_layers) if config.ablation_layers is not None else list(range(n))
    for name, chosen in (("layers", layers), ("das_layers", config.das_layers), ("ablation_layers", ablation_layers)):
        bad = [layer for layer in chosen if not 0 <= layer < n]
        if bad:
            raise ValueError(f"{name} {bad}: model has {n} layers (0-{n - 1}); use layers in that range")
    fit_layers = sorted(set(layers) | set(config.das_layers) | set(ablation_layers))
    sst_source = None if config.sst_folder is None else sst_folder(config.sst_folder)  # fails now, not at the end
    record = {"model": hm.name, **asdict(config), "layers": layers, "ablation_layers": ablation_layers}

    reviews = toy_movie_reviews(hm.tokenizer, config.test_fraction, config.seed, config.max_per_sentiment)
    das_config = TrainConfig(epochs=config.das_epochs, batch_size=16, lr=config.das_lr, seed=config.seed, patience=2)
    methods = [m for m in config.methods if m != "das"]
    fitted = fit_sentiment_directions(hm, reviews, fit_layers, config.component, methods,
                                      config.das_layers if "das" in config.methods else (), das_config,
                                      config.batch_size, config.seed, config.das_max_pairs)
    save_run(out / "directions", fitted.scores, {**record, "part": "directions", "das": fitted.das_info},
             figure=similarity_heatmap(fitted.cosines))
    save_run(out / "cosines", fitted.cosines, {**record, "part": "cosines"})
    vectors = {f"L{layer}.{m}": d.vector.contiguous() for layer, named in fitted.directions.items()
               for m, d in named.items()}
    atomic_write(out / "directions.safetensors", lambda tmp: save_file(vectors, tmp))
    atomic_write(out / "reviews.csv", lambda tmp: reviews.to_csv(tmp, index=False))

    pairs = contrast_pairs(reviews, "test", seed=config.seed)
    patching_record = {**record, "part": "patching", "pairs": len(pairs)}
    if is_complete(out / "patching", patching_record):  # a resumed run: this part is done
        curve = load_run(out / "patching")[0]
    else:
        curve = patching_curve(hm, pairs, fitted, layers, ["mean_diff"], config.position_sets, config.component,
                               config.batch_size)
        compare = list(config.compare_layers or config.das_layers)
        if compare:
            others = [m for m in config.methods if m != "mean_diff"]
            extra = patching_curve(hm, pairs, fitted, compare, others, config.position_sets, config.component,
                                   config.batch_size)
            curve = pd.concat([curve, extra], ignore_index=True)
        save_run(out / "patching", curve, patching_record, figure=recovery_figure(curve))

    summary = {"model": hm.name, "n_reviews": len(reviews), "n_test_pairs": len(pairs),
               "test_accuracy": fitted.scores.query("split == 'test'").groupby("method")["accuracy"].min().to_dict(),
               "recovery": curve.to_dict("records")}
    if sst_source is not None:
        sst = load_sst(sst_source, config.sst_split, limit=config.sst_limit, seed=config.seed)
        sst_record = {**record, "part": "sst", "n_sentences": len(sst),
                      "n_with_comma": int(sst["text"].str.contains(",").sum())}
        if is_complete(out / "sst", sst_record):
            table = load_run(out / "sst")[0]
        else:
            table = sst_ablation(hm, sst, fitted, ablation_layers, config.ablation_method, config.sst_position_sets,
                                 config.ablation_value, component=config.component,
                                 batch_size=config.batch_size // 2, seed=config.seed,
                                 mean_positions=config.sst_mean_positions)
            save_run(out / "sst", table, sst_record)
        summary["sst"] = table.to_dict("records")
    summary["seconds"] = round(time.time() - started, 1)
    atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2, default=str)))
    return summary
