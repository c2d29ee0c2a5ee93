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


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    An interrupted write leaves no half-written file; the result gets the usual umask-based mode
    (mkstemp's 0600 would make results private to the writer). The mode is set after ``write``:
    writers that replace the file themselves (safetensors' ``save_file`` writes a fresh 0600 file)
    would otherwise drop it.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_run(folder: str | Path, table: pd.DataFrame, config: dict, figure=None,
             summary: dict | None = None) -> dict[str, Path]:
    """Write ``results.parquet``, ``results.csv``, ``figure.html``, ``summary.json`` and, last,
    ``config.json``: a folder whose ``config.json`` exists is complete (``is_complete``), even after
    a kill. ``summary`` holds the numbers the command printed (a run's headline, readable without
    pandas); without one, it records the table's size and columns.

    >>> import tempfile; folder = tempfile.mkdtemp()
    >>> sorted(save_run(folder, pd.DataFrame({"x": [1]}), {"command": "demo"}, summary={"best": 1}))
    ['config', 'csv', 'summary', 'table']
    >>> json.loads((Path(folder) / "summary.json").read_text())["best"]
    1
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output folder {folder} is a file, not a folder; give another --out path")
    folder.mkdir(parents=True, exist_ok=True)
    config = {**config, "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    paths = {"table": folder / "results.parquet", "csv": folder / "results.csv", "config": folder / "config.json"}
    plain = pd.DataFrame(table)
    plain.attrs = {}
    atomic_write(paths["table"], lambda tmp: plain.to_parquet(tmp, index=False))
    atomic_write(paths["csv"], lambda tmp: plain.to_csv(tmp, index=False))
    if figure is not None:
        paths["figure"] = folder / "figure.html"
        atomic_write(paths["figure"], lambda tmp: figure.write_html(tmp, include_plotlyjs=True))
    if summary is None:
        summary = {"rows": len(plain), "columns": [str(c) for c in plain.columns]}
    paths["summary"] = write_summary(folder, {"command": config.get("command"), **summary})
    atomic_write(paths["config"], lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2, default=str)))
    return paths


def write_summary(folder: str | Path, summary: dict) -> Path:
    """``folder/summary.json``, written atomically (NaN and numpy scalars become plain JSON)."""
    path = Path(folder) / "summary.json"
    text = json.dumps(_plain(summary), indent=2, default=str)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


def _plain(value):
    # json.dumps writes NaN (invalid JSON) and stringifies numpy scalars: keep numbers numbers
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def is_complete(folder: str | Path, config: dict | None = None) -> bool:
    """Whether ``save_run`` finished writing ``folder`` (with ``config``'s values, when given:
    a resumed run reuses a part only if it was made with the same settings)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return False
    if config is None:
        return True
    saved = json.loads(path.read_text())
    fresh = json.loads(json.dumps(config, default=str))
    return all(saved.get(k) == v for k, v in fresh.items())


def load_run(folder: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read back a saved run's table and config."""
    folder = Path(folder)
    return pd.read_parquet(folder / "results.parquet"), json.loads((folder / "config.json").read_text())


__all__ = ["atomic_write", "is_complete", "save_run", "load_run", "write_summary"]
