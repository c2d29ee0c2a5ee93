"""Resumable memorization sweeps over N, layer, rank, kind, variant, pairs and seed.

Each finished run is appended to ``results.jsonl`` atomically (the whole file is rewritten to a
temporary file and renamed), so a killed sweep loses at most the run in progress; started again
with the same ``out`` it skips every run already in the file (matched on the run's full config)
and continues. After each run the table (``results.parquet``/``.csv``), the plotly figure and
``config.json`` are rewritten beside it (``workbench.runs.save_run``). One process writes a folder at
a time (``.sweep.lock``); run concurrent sweeps into separate folders.

Sharded (``shard=Shard(rank, world)``, ``--shard RANK/WORLD`` or torchrun's environment), each
shard runs every ``world``-th group (all N of a group stay together, so the capacity search holds)
and appends to its own ``parts/results-RANK-of-WORLD.jsonl`` under its own lock; every shard skips
the runs any log holds (a re-run resumes at any world size) and rewrites the table from all logs
when it ends, so the shard that finishes last leaves the merged table.

With ``stop_after_failure`` (capacity search), N grows within each (layer, rank, kind, variant,
pairs, seed) group and larger N are skipped once one N failed: capacity is the largest N reproduced
exactly. The skip is decided from the saved rows, so a resumed sweep skips exactly the same runs.

>>> df = memorize_sweep(hm, "alice", {"n_tokens": [16, 32, 64], "layer": [5, 15, 25]},
...                     MemorizeConfig(max_steps=300), out="runs/mem-sweep")             # doctest: +SKIP
>>> capacity_table(df)                                                                 # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import itertools
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from workbench.checkpoints import remove_stale_temps
from workbench.distributed import Shard
from workbench.hooked import HookedModel
from workbench.runs import atomic_write, save_run

from .experiment import MemorizeConfig, memorize
from .figure import capacity_figure
from .targets import task_for
from workbench.data.texts import load_text, resolve_text_path, text_fingerprint

# outermost first; n_tokens innermost so that a capacity search climbs N within each group
GRID_FIELDS = ("variant", "kind", "rank", "n_pairs", "layer", "seed", "n_tokens")
TIMING = ("seconds", "ms_per_step", "setup_seconds", "threads")  # differ between machines and runs


def expand_grid(base: MemorizeConfig, grid: Mapping[str, Sequence]) -> list[MemorizeConfig]:
    """Every combination of ``grid`` values over ``base``, n_tokens ascending innermost.

    >>> [(c.layer, c.n_tokens) for c in expand_grid(MemorizeConfig(), {"n_tokens": [32, 16], "layer": [1, 2]})]
    [(1, 16), (1, 32), (2, 16), (2, 32)]
    """
    unknown = sorted(set(grid) - set(GRID_FIELDS))
    if unknown:
        raise ValueError(f"cannot sweep {unknown}; sweepable fields: {list(GRID_FIELDS)}")
    axes = []
    for name in GRID_FIELDS:
        values = list(grid.get(name, [getattr(base, name)]))
        if not values:
            raise ValueError(f"grid field {name!r} has no values; give at least one or leave it out")
        axes.append(sorted(set(values)) if name == "n_tokens" else list(dict.fromkeys(values)))
    return [MemorizeConfig.from_dict({**base.to_dict(), **dict(zip(GRID_FIELDS, combo))})
            for combo in itertools.product(*axes)]


def run_key(config: MemorizeConfig) -> str:
    """The run's identity in results.jsonl: its whole config."""
    return json.dumps(config.to_dict(), sort_keys=True)


def _group(config: MemorizeConfig) -> str:
    return json.dumps({k: v for k, v in config.to_dict().items() if k != "n_tokens"}, sort_keys=True)


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


class ResultsLog:
    """``results.jsonl``: one JSON row per finished run, appended atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def append(self, row: dict) -> None:
        old = self.path.read_text() if self.path.exists() else ""
        _atomic_write_text(self.path, old + json.dumps(row) + "\n")  # key order kept: the table's columns


def _all_rows(out: Path) -> list[dict]:
    """The rows of ``results.jsonl`` and of every shard's log, once per run."""
    rows = {}
    for path in [out / "results.jsonl", *sorted((out / "parts").glob("results-*.jsonl"))]:
        for row in ResultsLog(path).read():
            rows.setdefault(row["run_key"], row)
    return list(rows.values())


def _check_same_setup(out: Path, setup: dict) -> None:
    """A resumed sweep must use the same model and text (rows are keyed by run config only)."""
    path = out / "sweep_config.json"
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    different = [k for k in ("model", "text_sha") if saved.get(k) != setup[k]]
    if different:
        detail = ", ".join(f"{k}: saved {saved.get(k)!r}, now {setup[k]!r}" for k in different)
        raise ValueError(f"{out} holds a sweep with another {' and '.join(different)} ({detail}); "
                         f"choose a new --out folder or use the same model and text")


def capacity_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, rank, kind, variant, pairs, seed): capacity = largest total tokens reproduced exactly,
    with that run's steps and seconds, and the smallest N that failed."""
    keys = ["variant", "kind", "rank", "n_pairs", "layer", "seed"]
    rows = []
    for values, part in df.groupby(keys, sort=False):
        ok = part[part["exact"]].sort_values("total_tokens")
        bad = part[~part["exact"]].sort_values("total_tokens")
        best = ok.iloc[-1] if len(ok) else None
        rows.append({**dict(zip(keys, values)),
                     "capacity": int(best["total_tokens"]) if best is not None else 0,
                     "steps": int(best["steps"]) if best is not None else None,
                     "seconds": float(best["seconds"]) if best is not None else None,
                     "first_failed_n": int(bad.iloc[0]["total_tokens"]) if len(bad) else None,
                     "failed_share": float(bad.iloc[0]["share"]) if len(bad) else None})
    table = pd.DataFrame(rows)
    for column in ("steps", "first_failed_n"):  # integers with gaps (no exact run / no failure)
        if column in table:
            table[column] = table[column].astype("Int64")
    return table


def memorize_sweep(hm: HookedModel, text: str, grid: Mapping[str, Sequence], base: MemorizeConfig | None = None,
                   out: str | Path = "runs/memorize-sweep", stop_after_failure: bool = True,
                   progress: bool = True, shard: Shard | None = None) -> pd.DataFrame:
    """Run (or resume) the sweep (this ``shard``'s groups of it); returns the table of all finished
    runs in grid order."""
    from tqdm.auto import tqdm

    base, shard = base or MemorizeConfig(), shard or Shard()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out, "" if shard.world == 1 else f"-{shard.rank}-of-{shard.world}"):
        if shard.world == 1:  # a shard leaves the others' temporaries alone: they may be writing
            remove_stale_temps(out, recursive=True)  # what a killed sweep was writing (it held the lock)
        return _sweep(hm, text, grid, base, out, stop_after_failure, progress, tqdm, shard)


@contextmanager
def _exclusive(out: Path, suffix: str = ""):
    """One writer per sweep folder (per shard): appends are atomic, but two processes would drop
    each other's rows."""
    with open(out / f".sweep{suffix}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another sweep is writing to {out}; wait for it to finish or choose another "
                             f"--out folder") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sweep(hm, text, grid, base, out, stop_after_failure, progress, tqdm, shard=Shard()) -> pd.DataFrame:
    story = load_text(text)
    setup = {"command": "memorize-sweep", "model": hm.name, "text": str(text),
             "text_path": str(resolve_text_path(text)), "text_sha": text_fingerprint(story),
             "base": base.to_dict(), "grid": {k: list(v) for k, v in grid.items()},
             "stop_after_failure": stop_after_failure}
    _check_same_setup(out, setup)
    _atomic_write_text(out / "sweep_config.json", json.dumps(setup, indent=2))
    log = ResultsLog(out / "results.jsonl" if shard.world == 1
                     else out / "parts" / f"results-{shard.rank}-of-{shard.world}.jsonl")
    log.path.parent.mkdir(exist_ok=True)
    rows = _all_rows(out)
    configs = expand_grid(base, grid)
    groups = list(dict.fromkeys(_group(c) for c in configs))
    mine = set(shard.take(groups))
    text_ids = hm.tokenizer(story, add_special_tokens=False)["input_ids"]
    vocab = min(len(hm.tokenizer), int(hm.model.config.vocab_size))
    bar = tqdm(total=len(configs), disable=not progress, desc="memorize sweep")
    for config in configs:
        key = run_key(config)
        failed = [r for r in rows if r.get("group") == _group(config) and not r["exact"]
                  and r["n_tokens"] < config.n_tokens]
        if _group(config) not in mine or any(r["run_key"] == key for r in rows) or (stop_after_failure and failed):
            bar.update(1)
            continue
        task = task_for(hm.tokenizer, story, config.n_tokens, variant=config.variant, n_pairs=config.n_pairs,
                        key=config.key, seed=config.seed, vocab_size=vocab, text_ids=text_ids)
        row = memorize(hm, task, config, progress=progress)
        row.update(run_key=key, group=_group(config), text_sha=setup["text_sha"])
        log.append(row)
        rows.append(row)
        _save_table(out, rows, configs, setup)
        bar.update(1)
        bar.set_postfix(N=config.n_tokens, L=config.layer, exact=row["exact"], steps=row["steps"])
    bar.close()
    return _save_table(out, _all_rows(out) if shard.world > 1 else rows, configs, setup)  # the others' rows too


def results_frame(rows: list[dict], configs: list[MemorizeConfig] | None = None) -> pd.DataFrame:
    """Rows as a DataFrame in grid order (rows outside ``configs`` keep their log order, after)."""
    if not rows:
        return pd.DataFrame()
    order = {run_key(c): i for i, c in enumerate(configs or [])}
    ranked = sorted(rows, key=lambda r: order.get(r["run_key"], len(order)))
    return pd.DataFrame(ranked).drop(columns=["run_key", "group"])


def _save_table(out: Path, rows: list[dict], configs: list[MemorizeConfig], setup: dict) -> pd.DataFrame:
    df = results_frame(rows, configs)
    if len(df):
        summary = {"runs": len(df), "exact_runs": int(df["exact"].sum()) if "exact" in df else None,
                   "capacity": capacity_table(df).to_dict(orient="records") if "exact" in df else None}
        save_run(out, df, setup, figure=capacity_figure(df), summary=summary)
    return df
