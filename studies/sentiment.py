"""The sentiment direction study (``probes.sentiment``) as a reproduction: how much of the model's
above-chance SST accuracy is lost when the sentiment direction is mean-ablated at every layer.

>>> SENTIMENT_QUICK.sst_limit
40
"""

from __future__ import annotations

from pathlib import Path

from probes.sentiment.run import SentimentConfig, run_sentiment

SENTIMENT_FULL = SentimentConfig(layer_step=3, sst_limit=300)
SENTIMENT_QUICK = SentimentConfig(layer_step=10, sst_limit=40, max_per_sentiment=4, methods=("mean_diff",))


def run_sentiment_study(hm, config: SentimentConfig, out: str | Path) -> dict:
    """The study's summary plus ``ablation_lost``: the share of above-chance accuracy lost (all
    positions, sentiment direction), the number the paper reports as 76%."""
    summary = run_sentiment(hm, config, Path(out))
    summary["ablation_lost"] = ablation_lost(summary)
    return summary


def ablation_lost(summary: dict, direction: str = "sentiment") -> float | None:
    """The share of above-chance SST accuracy lost when ``direction`` is ablated at all positions
    (``"random"``: the control direction), from a saved or returned sentiment summary."""
    rows = [r for r in summary.get("sst", []) if r["direction"] == direction and r["positions"] == "all"]
    return rows[0]["above_chance_lost"] if rows else None


__all__ = ["SENTIMENT_FULL", "SENTIMENT_QUICK", "ablation_lost", "run_sentiment_study"]
