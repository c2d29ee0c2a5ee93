"""Memorization capacity curves: per layer and per variant (natural, shuffled, random tokens),
the largest N a rank-1 intervention makes the frozen model recite exactly.

A thin study over ``reft.memorize.memorize_sweep`` (resumable, one row per run, stops growing N for
a (layer, variant) after its first failure), bounded by a per-run wall-clock budget.

>>> MemorizationStudy(layers=(15,), variants=("natural",), n_tokens=(8,)).grid()["layer"]
[15]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class MemorizationStudy:
    layers: tuple[int, ...] = (5, 10, 15, 20, 25)
    variants: tuple[str, ...] = ("natural", "shuffled", "random")
    n_tokens: tuple[int, ...] = (16, 32, 64, 128, 256)
    rank: int = 1
    max_steps: int = 400
    max_seconds: float = 45.0             # per run: the study is bounded by time, not convergence
    text: str = "alice-pg11"              # the Gutenberg #11 edition (the offline mirror holds it; alice29 needs a fetch)

    def grid(self) -> dict:
        return {"n_tokens": list(self.n_tokens), "layer": list(self.layers), "variant": list(self.variants),
                "rank": [self.rank]}


def run_memorization_study(hm, study: MemorizationStudy, out: str | Path, progress: bool = True) -> pd.DataFrame:
    """The sweep under ``out`` and the capacity table (also ``out/capacity.csv``)."""
    from reft.memorize import MemorizeConfig, capacity_table, memorize_sweep
    from workbench.runs import atomic_write
    base = MemorizeConfig(rank=study.rank, max_steps=study.max_steps, max_seconds=study.max_seconds)
    df = memorize_sweep(hm, study.text, study.grid(), base, out=out, stop_after_failure=True, progress=progress)
    table = capacity_table(df) if len(df) else pd.DataFrame()
    atomic_write(Path(out) / "capacity.csv", lambda tmp: table.to_csv(tmp, index=False))
    (Path(out) / "study.json").write_text(pd.Series(asdict(study)).to_json())
    return table


__all__ = ["MemorizationStudy", "run_memorization_study"]
