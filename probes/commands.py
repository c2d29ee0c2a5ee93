"""``workbench ravel``: Cause / Isolate / Disentangle for PCA, probe, mean difference, DAS and MDAS.

    workbench ravel --data ravel --attributes Country Continent --layer 8 --k 16 --epochs 2 --out runs/ravel
    workbench ravel --data ravel --entity-type nobel_prize_winner --attributes "Country of Birth" Field

``--data`` as for ``workbench das`` (default: the geonames city set; ``ravel`` after ``workbench
data fetch ravel``); ``--attributes`` defaults to the data's first two (attribute names with spaces
are quoted; case and ``_`` for space are forgiven). Writes ``results.parquet``/``.csv`` (one row per
method and attribute, plus the mean), ``figure.html``, ``kept.csv`` (kept share of queries per split
and attribute), ``data_report.csv`` (kept and dropped items by stage and reason) and ``config.json``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from workbench.commands.common import add_model_args, check_site_args, load_from_args
from workbench.commands.das import add_data_args, load_data_from_args, save_data_report, train_config_from_args

from .ravel import METHODS


def run(args: argparse.Namespace) -> int:
    import torch

    from workbench.runs import atomic_write, save_run
    from workbench.sites import Site

    from .ravel import REFERENCE, RavelConfig, ravel_figure, run_ravel

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    data = load_data_from_args(args)  # before the model: a missing dataset fails at once
    attributes = data.resolve(args.attributes) if args.attributes else data.attribute_names[:2]
    hm = load_from_args(args)
    check_site_args(hm, args.layer, args.component, args.k)  # before the data is prepared
    config = RavelConfig(attributes=tuple(dict.fromkeys(attributes)), site=str(Site(args.layer, args.component)), k=args.k,
                         methods=tuple(args.methods), entities_per_split=dict(zip(("train", "val", "test"), args.entities)),
                         max_templates=args.max_templates,
                         max_entity_tokens=args.max_entity_tokens, n_train=args.examples[0], n_val=args.examples[1],
                         n_test=args.examples[2], seed=args.seed, train=train_config_from_args(args),
                         reference=not args.no_reference)
    from workbench.distributed import Shard
    shard = Shard.from_env(args.shard)  # --shard, else torchrun's RANK/WORLD_SIZE, else 0/1
    if shard.world > 1 and not args.out:
        raise ValueError(f"shard {shard}: give --out, the folder every shard writes its methods' parts into")
    out = Path(args.out or f"runs/ravel-{datetime.now():%Y%m%d-%H%M%S}")
    # out/resume keeps finished methods and DAS epochs: the same command, killed and run again, resumes
    if shard.world > 1:  # this shard's methods into out/resume; the whole table once all are there
        methods = list(config.methods) + ([REFERENCE] if config.reference else [])
        run_ravel(hm, data, config, report_to=out / "data_report.csv", resume_dir=out / "resume",
                  only=shard.take(methods))
        missing = [m for m in methods if not (out / "resume" / f"{m}.json").is_file()]
        if missing:
            print(f"shard {shard}: its methods are in {out / 'resume'}; {missing} are still missing: run the "
                  f"other shards, then any shard again to merge")
            return 0
    table, details = run_ravel(hm, data, config, report_to=out / "data_report.csv", resume_dir=out / "resume")
    run_config = {"command": "ravel", **{k: v for k, v in vars(args).items() if k != "func"},
                  "ravel_config": asdict(config), "data_origin": data.origin, "model": hm.name,
                  "threads": torch.get_num_threads(), "prepare_seconds": round(details["prepare_seconds"], 1),
                  "seconds": round(time.time() - started, 1)}
    summary = {"site": config.site, "k": config.k, "attributes": list(config.attributes), "model": hm.name,
               "scores": table.to_dict(orient="records"), "kept": details["summary"].to_dict(orient="records"),
               "seconds": run_config["seconds"]}
    paths = save_run(out, table, run_config, figure=ravel_figure(table), summary=summary)
    atomic_write(out / "kept.csv", lambda tmp: details["summary"].to_csv(tmp, index=False))
    save_data_report(out, details["report"])
    print("kept share of queries the model answers correctly:")
    print(details["summary"].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nCause / Isolate / Disentangle at {config.site}, k={config.k} (test split):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"total {time.time() - started:.1f} s; wrote {out}/ ({', '.join(p.name for p in paths.values())}, "
          f"kept.csv, data_report.csv)")
    return 0


def register(sub) -> None:
    ravel = sub.add_parser("ravel", help="RAVEL-style Cause/Isolate/Disentangle for subspace methods")
    ravel.add_argument("--attributes", nargs="+", default=None,
                       help="attributes to compare (default: the data's first two, e.g. Continent Country)")
    ravel.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ravel.add_argument("--no-reference", action="store_true", help="skip the full-patch reference row")
    ravel.add_argument("--shard", help="RANK/WORLD: fit every WORLD-th method from RANK into OUT/resume; the shard "
                                       "that finds every method merges the table (default: torchrun's "
                                       "RANK/WORLD_SIZE, else every method)")
    add_data_args(ravel)
    add_model_args(ravel)
    ravel.set_defaults(func=run)
