"""``workbench memorize`` (one run) and ``workbench memorize-sweep`` (resumable grid).

    workbench memorize --text alice --tokens 64 --layer 15 --rank 1 --out runs/mem-64
    workbench memorize-sweep --text alice --tokens 16,32,64,128 --layers 5,15,25 \\
        --variants natural,shuffled,random --max-steps 300 --out runs/mem-sweep
    workbench memorize-batch --text alice --tokens 32,64 --seeds 0,1 --layer 15 --out runs/mem-batch

``--text`` is a registry text (``alice``, alias of ``alice29``: the Canterbury alice29.txt from the
brotli sdist on PyPI; ``alice-pg11``: Gutenberg #11), fetched once with ``workbench data fetch
NAME``, or a path to any UTF-8 text. A killed sweep continues where it stopped when run again with the same
``--out``. Registered as the ``workbench.commands`` entry point ``memorize`` (pyproject.toml).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path

from workbench.commands.common import add_model_args, at_least, load_from_args, positive


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 16,32,64, got {text!r}") from None


def _words(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _base_config(args: argparse.Namespace, **overrides):
    from .memorize import MemorizeConfig
    fields = dict(n_tokens=64, layer=15, rank=1, kind="consreft", position=args.position, variant="natural",
                  n_pairs=1, key=args.key, lr=args.lr, value_lr_scale=not args.no_value_lr_scale,
                  max_steps=args.max_steps, max_seconds=args.max_seconds, patience=args.patience, seed=0,
                  path=args.path, verify=not args.no_verify)
    return MemorizeConfig(**{**fields, **overrides})


def _setup(args: argparse.Namespace):
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    return load_from_args(args)


def run_one(args: argparse.Namespace) -> int:
    import pandas as pd
    from safetensors.torch import save_file

    from workbench.runs import atomic_write, save_run

    from .memorize import load_text, memorize, task_for
    from workbench.data.texts import resolve_text_path, text_fingerprint

    started = time.time()
    config = _base_config(args, n_tokens=args.tokens, layer=args.layer, rank=args.rank, kind=args.kind,
                          variant=args.variant, n_pairs=args.pairs, seed=args.seed)
    story = load_text(args.text)
    hm = _setup(args)
    vocab = min(len(hm.tokenizer), int(hm.model.config.vocab_size))
    task = task_for(hm.tokenizer, story, config.n_tokens, variant=config.variant, n_pairs=config.n_pairs,
                    key=config.key, seed=config.seed, vocab_size=vocab)
    row, intervention = memorize(hm, task, config, progress=not args.quiet, return_intervention=True)
    out = Path(args.out or f"runs/memorize-{datetime.now():%Y%m%d-%H%M%S}")
    record = {"command": "memorize", **{k: v for k, v in vars(args).items() if k != "func"},
              "memorize_config": config.to_dict(), "intervention": intervention.spec(), "model_name": hm.name,
              "text_path": str(resolve_text_path(args.text)), "text_sha": text_fingerprint(story),
              "keys": list(task.keys), "seconds_total": round(time.time() - started, 1)}
    paths = save_run(out, pd.DataFrame([row]), record, summary={"model": hm.name, **row})
    state = {k: v.detach().contiguous().cpu() for k, v in intervention.state_dict().items()}
    atomic_write(out / "intervention.safetensors", lambda tmp: save_file(state, tmp))  # umask mode, not 0600
    status = "recited exactly" if row["exact"] else f"exact prefix {row['exact_prefix']}/{config.n_tokens}"
    print(f"N={task.n_tokens} x {task.n_pairs} pair(s), layer {config.layer}, {config.kind} rank {config.rank}, "
          f"{config.variant}: {status} after {row['steps']} steps in {row['seconds']:.1f} s "
          f"({row['ms_per_step']:.0f} ms/step, {row['path_used']} path, {row['threads']} threads); "
          f"loss {row['loss_first']:.3f} -> {row['loss_final']:.3f}")
    print("wrote " + ", ".join(str(p) for p in [*paths.values(), out / "intervention.safetensors"]))
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from .memorize import capacity_table, memorize_sweep

    base = _base_config(args)
    grid = {"n_tokens": args.tokens, "layer": args.layers, "rank": args.ranks, "kind": args.kinds,
            "variant": args.variants, "n_pairs": args.pairs, "seed": args.seeds}
    out = Path(args.out or f"runs/memorize-sweep-{datetime.now():%Y%m%d-%H%M%S}")
    from workbench.data.texts import resolve_text_path
    resolve_text_path(args.text)  # before the model: a missing dataset fails at once with the fetch command
    hm = _setup(args)
    from workbench.distributed import Shard
    shard = Shard.from_env(args.shard)
    if shard.world > 1 and not args.out:
        raise ValueError(f"shard {shard}: give --out, the folder every shard of the sweep writes into")
    df = memorize_sweep(hm, args.text, grid, base, out=out, stop_after_failure=not args.no_stop_after_failure,
                        progress=not args.quiet, shard=shard)
    if len(df):
        cols = ["variant", "layer", "rank", "kind", "n_pairs", "n_tokens", "exact", "exact_prefix", "share", "steps",
                "seconds", "ms_per_step", "loss_final"]
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print("\ncapacity (largest N recited exactly):")
        print(capacity_table(df).to_string(index=False))
    print(f"wrote {out}/ (results.jsonl, results.parquet/.csv, figure.html, config.json, sweep_config.json)")
    return 0


def run_batch(args: argparse.Namespace) -> int:
    """Every (N, seed) pair at one layer trained together: one batched forward, one edit per row."""
    import pandas as pd

    from workbench.runs import save_run

    from .memorize import memorize_batched
    from workbench.data.texts import resolve_text_path

    started = time.time()
    resolve_text_path(args.text)  # before the model: a missing dataset fails at once with the fetch command
    configs = [_base_config(args, n_tokens=n, layer=args.layer, rank=args.rank, kind=args.kind,
                            variant=args.variant, seed=seed) for n in args.tokens for seed in args.seeds]
    hm = _setup(args)
    rows = memorize_batched(hm, args.text, configs, progress=not args.quiet)
    df = pd.DataFrame(rows)
    out = Path(args.out or f"runs/memorize-batch-{datetime.now():%Y%m%d-%H%M%S}")
    record = {"command": "memorize-batch", **{k: v for k, v in vars(args).items() if k != "func"},
              "model_name": hm.name, "seconds_total": round(time.time() - started, 1)}
    run_steps = int(df["steps"].sum())
    loop = float(df["batch_seconds"].iloc[0])
    summary = {"model": hm.name, "runs": len(rows), "exact": int(df["exact"].sum()), "run_steps": run_steps,
               "batch_seconds": loop, "run_steps_per_second": round(run_steps / max(loop, 1e-9), 2)}
    paths = save_run(out, df, record, summary=summary)
    cols = ["n_tokens", "seed", "exact", "exact_prefix", "steps", "loss_final"]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"{len(rows)} runs batched at layer {args.layer}: {run_steps} run-steps in {loop:.1f} s "
          f"({summary['run_steps_per_second']} run-steps/s)")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _training_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text", default="alice",
                        help="'alice' (= alice29, `workbench data fetch alice29`), 'alice-pg11', or a text file path")
    parser.add_argument("--position", type=int, default=-1, help="key token to edit (-1: its last)")
    parser.add_argument("--key", default="ALIC#ID{i}->", help="key prompt; {i} numbers the pairs")
    parser.add_argument("--lr", type=positive, default=1e-2, help="Adam step size")
    parser.add_argument("--no-value-lr-scale", action="store_true",
                        help="do not scale b's step by |h| (the residual stream's norm at the site)")
    parser.add_argument("--max-steps", type=at_least(1), default=1000, help="optimizer steps per run at most")
    parser.add_argument("--max-seconds", type=positive, help="wall-clock limit per run")
    parser.add_argument("--patience", type=at_least(0), default=0, help="stop a run after this many steps without progress")
    parser.add_argument("--path", default="auto", choices=["auto", "fast", "naive"],
                        help="fast: cached frozen states (Llama family); naive: full forward each step")
    parser.add_argument("--no-verify", action="store_true", help="trust the teacher-forced match (skip generation)")
    parser.add_argument("--threads", type=at_least(1), help="torch CPU threads (default: torch's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_model_args(parser)


def register(sub) -> None:
    one = sub.add_parser("memorize", help="train one intervention to make the frozen model recite a text")
    one.add_argument("--tokens", type=at_least(1), default=64, help="N: target tokens per key")
    one.add_argument("--layer", type=at_least(0), default=15)
    one.add_argument("--rank", type=at_least(1), default=1)
    one.add_argument("--kind", default="consreft", choices=["consreft", "loreft", "direft"])
    one.add_argument("--variant", default="natural", choices=["natural", "shuffled", "random"])
    one.add_argument("--pairs", type=at_least(1), default=1, help="K key -> value pairs in one intervention")
    one.add_argument("--seed", type=int, default=0)
    one.add_argument("--out", help="output folder (default runs/memorize-<time>)")
    _training_args(one)
    one.set_defaults(func=run_one)

    sweep = sub.add_parser("memorize-sweep", help="resumable memorization sweep over N, layer, rank, kind, variant")
    sweep.add_argument("--tokens", type=_ints, default=[16, 32, 64, 128], help="N values, e.g. 16,32,64,128")
    sweep.add_argument("--layers", type=_ints, default=[15])
    sweep.add_argument("--ranks", type=_ints, default=[1])
    sweep.add_argument("--kinds", type=_words, default=["consreft"])
    sweep.add_argument("--variants", type=_words, default=["natural"], help="natural,shuffled,random")
    sweep.add_argument("--pairs", type=_ints, default=[1], help="K values (key -> value pairs)")
    sweep.add_argument("--seeds", type=_ints, default=[0])
    sweep.add_argument("--no-stop-after-failure", action="store_true",
                       help="run every N even after a smaller N failed in the same group")
    sweep.add_argument("--out", help="output folder; an existing one is resumed (default runs/memorize-sweep-<time>)")
    sweep.add_argument("--shard", help="RANK/WORLD: run every WORLD-th group (layer, rank, kind, ...) from RANK into "
                                       "the shared --out; the last shard to finish writes the merged table "
                                       "(default: torchrun's RANK/WORLD_SIZE, else the whole sweep)")
    _training_args(sweep)
    sweep.set_defaults(func=run_sweep)

    batch = sub.add_parser("memorize-batch", help="K independent memorization runs (N x seed) in one batched forward")
    batch.add_argument("--tokens", type=_ints, default=[16, 32], help="N values, e.g. 16,32")
    batch.add_argument("--seeds", type=_ints, default=[0, 1], help="seeds, e.g. 0,1,2")
    batch.add_argument("--layer", type=at_least(0), default=15)
    batch.add_argument("--rank", type=at_least(1), default=1)
    batch.add_argument("--kind", default="consreft", choices=["consreft", "loreft", "direft"])
    batch.add_argument("--variant", default="natural", choices=["natural", "shuffled", "random"])
    batch.add_argument("--out", help="output folder (default runs/memorize-batch-<time>)")
    _training_args(batch)
    batch.set_defaults(func=run_batch)

