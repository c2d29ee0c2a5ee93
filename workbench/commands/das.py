"""``workbench das``: train a DAS intervention for one attribute on RAVEL-style entity data.

    workbench das --data ravel --attribute Country --layer 8 --k 16 --epochs 3 --out runs/das-country
    workbench das --data ravel --entity-type nobel_prize_winner --attribute "Country of Birth" ...

``--data`` is a registry dataset (``geonames-cities``, the default, needs no download; ``ravel``
after ``workbench data fetch ravel``) or a RAVEL-format folder. Writes ``results.parquet``/``.csv``
(per-example test results), ``history.csv`` (loss per step), ``intervention.safetensors`` (state
and basis), ``data_report.csv`` (what the loader and filters kept and dropped, by reason) and
``config.json`` to the output folder.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from ..sites import COMPONENTS
from .common import add_model_args, at_least, check_site_args, load_from_args, positive

DATA_DEFAULT = "geonames-cities"


def add_data_args(parser: argparse.ArgumentParser, attributes_flag: str = "--attribute") -> None:
    """Options shared by ``workbench das`` and ``workbench ravel``: data, site, sizes, training."""
    parser.add_argument("--data", default=DATA_DEFAULT,
                        help="registry dataset 'ravel' or 'geonames-cities' (default, no download), "
                             "or a RAVEL-format folder")
    parser.add_argument("--entity-type", default="city",
                        help="RAVEL entity type: city, nobel_prize_winner, occupation, physical_object, verb")
    parser.add_argument("--min-population", type=at_least(0), default=500_000, help="geonames cities: population floor")
    parser.add_argument("--layer", type=int, default=8, help="layer of the site (0-based)")
    parser.add_argument("--component", default="resid_post", choices=sorted(COMPONENTS))
    parser.add_argument("--position", default="entity-last", choices=["entity-last"],
                        help="token intervened on in base and source: the entity's last token")
    parser.add_argument("--k", type=at_least(0), default=16, help="subspace size")
    parser.add_argument("--epochs", type=at_least(1), default=3)
    parser.add_argument("--batch-size", type=at_least(1), default=16, help="training batch size")
    parser.add_argument("--lr", type=positive, default=1e-2)
    parser.add_argument("--patience", type=at_least(1), default=1, help="epochs without better val IIA before stopping")
    parser.add_argument("--entities", type=at_least(0), nargs=3, default=[120, 40, 60], metavar=("TRAIN", "VAL", "TEST"),
                        help="entities drawn per split before filtering")
    parser.add_argument("--examples", type=at_least(0), nargs=3, default=[128, 32, 64], metavar=("TRAIN", "VAL", "TEST"),
                        help="counterfactual examples per attribute and kind (cause / isolate) per split")
    parser.add_argument("--max-templates", type=at_least(1), default=3, help="templates per attribute and split")
    parser.add_argument("--max-entity-tokens", type=at_least(1), default=None,
                        help="drop entities longer than this many tokens (1: the last token is the whole entity)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=at_least(0), default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--out", help="output folder (default runs/<command>-<time>)")


def load_data_from_args(args: argparse.Namespace):
    """The entity data named by ``--data`` (resolved before the model loads, so a missing dataset
    fails at once with the fetch command)."""
    from ..data import city_dataset, load_ravel
    from ..data.registry import get, is_name
    if is_name(args.data) and get(args.data).name == DATA_DEFAULT:
        if args.entity_type != "city":
            raise ValueError(f"--data {args.data} has only cities; for --entity-type {args.entity_type} use "
                             f"--data ravel (after `workbench data fetch ravel`)")
        return city_dataset(min_population=args.min_population)
    return load_ravel(args.data, args.entity_type)


def save_data_report(out: Path, report) -> Path:
    """``data_report.csv``: kept and dropped counts by stage and reason; prints the drops."""
    from ..data.report import dropped_summary
    from ..runs import atomic_write
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "data_report.csv", lambda tmp: report.to_csv(tmp, index=False))
    print(f"data: {dropped_summary(report)} (by stage in {out / 'data_report.csv'})")
    return out / "data_report.csv"


def train_config_from_args(args: argparse.Namespace):
    from ..das import TrainConfig
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       patience=args.patience)


def _splits(values) -> dict:
    return dict(zip(("train", "val", "test"), values))


def run(args: argparse.Namespace) -> int:
    import pandas as pd
    import torch
    from safetensors.torch import save_file

    from ..das import build_intervention, evaluate, train_alignment
    from ..data import prepare_ravel
    from ..runs import atomic_write, save_run
    from ..sites import Site

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    data = load_data_from_args(args)
    attributes = list(dict.fromkeys(data.resolve([args.attribute, *args.others])))
    args.attribute = attributes[0]
    hm = load_from_args(args)
    site = Site(args.layer, args.component)
    check_site_args(hm, args.layer, args.component, args.k)  # before the data is prepared
    setup = prepare_ravel(hm, data, attributes,
                          _splits(args.examples), _splits(args.entities), args.max_templates, args.seed,
                          progress=True, max_entity_tokens=args.max_entity_tokens)
    print(setup.summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    out = Path(args.out or f"runs/das-{datetime.now():%Y%m%d-%H%M%S}")
    save_data_report(out, setup.report)  # before training, so a failed run still shows what was dropped
    examples = {split: setup.examples[split][args.attribute] for split in ("train", "val", "test")}
    torch.manual_seed(args.seed)
    intervention = build_intervention(args.method, hm.site_size(site), args.k, args.max_rank, dtype=hm.dtype,
                                      device=hm.device_of(site))
    config = train_config_from_args(args)
    result = train_alignment(hm, site, intervention, examples["train"]["cause"], examples["val"]["cause"], config)
    scores = {kind: evaluate(hm, site, intervention, examples["test"][kind]) for kind in ("cause", "isolate")
              if len(examples["test"][kind])}
    table = pd.concat([e.examples for e in scores.values()], ignore_index=True)
    run_config = {"command": "das", **{k: v for k, v in vars(args).items() if k != "func"}, "site": str(site),
                  "train_config": asdict(config), "val_iia": result.val_iia, "best_epoch": result.best_epoch,
                  "test_iia": {k: e.iia for k, e in scores.items()}, "train_seconds": round(result.seconds, 1),
                  "seconds": round(time.time() - started, 1),
                  "kept": setup.summary.to_dict(orient="records"), "data_origin": data.origin}
    summary = {"method": args.method, "site": str(site), "k": args.k, "attribute": args.attribute,
               "val_iia": result.val_iia, "best_epoch": result.best_epoch,
               "test_iia": {k: e.iia for k, e in scores.items()},
               "test_examples": {k: len(e.examples) for k, e in scores.items()},
               "train_seconds": round(result.seconds, 1), "seconds": round(time.time() - started, 1)}
    paths = save_run(out, table.drop(columns=["base_ids", "source_ids"], errors="ignore"), run_config, summary=summary)
    result.history.to_csv(out / "history.csv", index=False)
    state = {k: v.detach().contiguous() for k, v in intervention.state_dict().items()}
    tensors = {**state, "basis": intervention.basis().contiguous()}
    meta = {"method": args.method, "site": str(site), "k": str(args.k)}
    atomic_write(out / "intervention.safetensors", lambda tmp: save_file(tensors, tmp, metadata=meta))  # umask mode
    (out / "intervention.json").write_text(json.dumps({"method": args.method, "site": str(site), "d": hm.site_size(site),
                                                        "k": args.k, "max_rank": args.max_rank}, indent=2))
    print(f"{args.method} at {site}, k={args.k}: val IIA per epoch {[round(v, 3) for v in result.val_iia]}")
    for kind, e in scores.items():
        print(f"test {kind} IIA ({args.attribute}): {e.iia:.3f} on {len(e.examples)} examples")
    print(f"train {result.seconds:.1f} s, total {time.time() - started:.1f} s; wrote {out}/ "
          f"({', '.join(p.name for p in paths.values())}, history.csv, intervention.safetensors, data_report.csv)")
    return 0


def register(sub) -> None:
    das = sub.add_parser("das", help="train a DAS intervention for one entity attribute (RAVEL-style data)")
    das.add_argument("--attribute", required=True, help="target attribute, e.g. Country")
    das.add_argument("--others", nargs="*", default=[],
                     help="other attributes whose prompts give Isolate test examples, e.g. Continent")
    das.add_argument("--method", default="das", choices=["das", "rotated", "boundless"],
                     help="das: low-rank rotation (k rows); rotated: full d x d rotation; boundless: learned size")
    das.add_argument("--max-rank", type=at_least(1), default=None, help="boundless: rotated coordinates (default d)")
    add_data_args(das)
    add_model_args(das)
    das.set_defaults(func=run)
