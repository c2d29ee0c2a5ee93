"""Kept / dropped counts: what a loader or query builder used and what it skipped, and why.

Readers take real releases as they are; every item they skip is counted here by reason (with a
few examples), and the table is saved with the run (``data_report.csv``).

>>> report = DataReport()
>>> report.kept("load", "entities", 2)
>>> report.drop("load", "values", "empty_value", "Paris.Country")
>>> report.frame()[["stage", "what", "outcome", "count"]].values.tolist()
[['load', 'entities', 'kept', 2], ['load', 'values', 'empty_value', 1]]
"""

from __future__ import annotations

import pandas as pd

COLUMNS = ["stage", "what", "outcome", "count", "examples"]
MAX_EXAMPLES = 3


class DataReport:
    """Counts per (stage, what, outcome); ``outcome`` is ``kept`` or the reason for a drop."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, str], list] = {}

    def _add(self, stage: str, what: str, outcome: str, n: int, example: str | None) -> None:
        row = self._rows.setdefault((stage, what, outcome), [0, []])
        row[0] += n
        if example is not None and len(row[1]) < MAX_EXAMPLES and example not in row[1]:
            row[1].append(example)

    def kept(self, stage: str, what: str, n: int = 1, example: str | None = None) -> None:
        self._add(stage, what, "kept", n, example)

    def drop(self, stage: str, what: str, reason: str, example: str | None = None, n: int = 1) -> None:
        self._add(stage, what, reason, n, example)

    def dropped(self, reason: str) -> int:
        """How many items were dropped for ``reason`` (any stage)."""
        return sum(count for (_, _, outcome), (count, _) in self._rows.items() if outcome == reason)

    def frame(self) -> pd.DataFrame:
        rows = [(s, w, o, c, "; ".join(e)) for (s, w, o), (c, e) in self._rows.items()]
        return pd.DataFrame(rows, columns=COLUMNS)


def combine(*frames: pd.DataFrame | None) -> pd.DataFrame:
    """Report tables one after another (empty ones ignored)."""
    parts = [f for f in frames if f is not None and len(f)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)


def dropped_summary(report: pd.DataFrame) -> str:
    """One line: the drop reasons and counts, e.g. ``empty_value 3, duplicate_entity 1``.

    >>> dropped_summary(pd.DataFrame([["load", "values", "empty_value", 3, ""]], columns=COLUMNS))
    'empty_value 3'
    """
    drops = report[report["outcome"] != "kept"] if len(report) else report
    if not len(drops):
        return "nothing dropped"
    totals = drops.groupby("outcome", sort=False)["count"].sum()
    return ", ".join(f"{reason} {int(n)}" for reason, n in totals.items())
