"""Saving a run: its table, figure and config side by side, written atomically.

>>> save_run("runs/demo", df, {"base": "..."}, figure=fig)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd


def _atomic_write(path: Path, write) -> None:
    """Write via a temporary file in the same folder, then rename (no half-written files)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_run(folder: str | Path, table: pd.DataFrame, config: dict, figure=None) -> dict[str, Path]:
    """Write ``results.parquet``, ``results.csv``, ``config.json`` and ``figure.html``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {**config, "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    paths = {"table": folder / "results.parquet", "csv": folder / "results.csv", "config": folder / "config.json"}
    plain = pd.DataFrame(table)
    plain.attrs = {}
    _atomic_write(paths["table"], lambda tmp: plain.to_parquet(tmp, index=False))
    _atomic_write(paths["csv"], lambda tmp: plain.to_csv(tmp, index=False))
    _atomic_write(paths["config"], lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2, default=str)))
    if figure is not None:
        paths["figure"] = folder / "figure.html"
        _atomic_write(paths["figure"], lambda tmp: figure.write_html(tmp, include_plotlyjs=True))
    return paths


def load_run(folder: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read back a saved run's table and config."""
    folder = Path(folder)
    return pd.read_parquet(folder / "results.parquet"), json.loads((folder / "config.json").read_text())


__all__ = ["save_run", "load_run"]
