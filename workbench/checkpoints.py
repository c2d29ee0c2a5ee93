"""Checkpoints that survive ``kill -9`` at any point: whole folders swapped in atomically, optimizer
and RNG state as safetensors + JSON (never pickle).

A checkpoint folder is written into a temporary sibling and renamed into place; the previous one
is moved aside first and removed last, so at every instant either the old or the new checkpoint is
complete. ``complete_dir`` finds whichever survived a kill.

>>> with atomic_dir(Path(tmp) / "checkpoint") as folder:            # doctest: +SKIP
...     (folder / "state.json").write_text("{}")
>>> complete_dir(Path(tmp) / "checkpoint")                          # doctest: +SKIP
PosixPath('.../checkpoint')
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file

from .runs import atomic_write


def _umask() -> int:
    """The process umask (read by setting it, then restoring it at once)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path``; when the block ends without error it
    replaces ``path`` (the old one is kept as ``<path>.old`` until the new one is in place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would stay on the checkpoint after the rename
    old = path.with_name(path.name + ".old")
    try:
        yield tmp
        if old.exists() and path.exists():
            shutil.rmtree(old)  # a kill after the last swap left it behind
        if path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def complete_dir(path: str | os.PathLike) -> Path | None:
    """``path`` if it exists, else ``<path>.old`` (a kill between the two renames), else None.
    Temporary folders and files left by a killed writer are removed."""
    path = Path(path)
    remove_stale_temps(path.parent, path.name)
    if path.is_dir():
        return path
    old = path.with_name(path.name + ".old")
    return old if old.is_dir() else None


def remove_stale_temps(folder: str | os.PathLike, name: str | None = None, recursive: bool = False) -> list[Path]:
    """Remove ``.<name>-*`` temporaries (``atomic_write``/``atomic_dir`` debris after a kill) in
    ``folder`` (and its subfolders with ``recursive``); only those of ``name`` when given. Resumable
    runs call this when they start. Returns what was removed.

    >>> remove_stale_temps("runs/sentiment", recursive=True)             # doctest: +SKIP
    [PosixPath('runs/sentiment/patching/.results.csv-h2fogtwo')]
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(f".{name}-" if name else ".") and "-" in entry.name:
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
        elif recursive and entry.is_dir() and not entry.is_symlink():
            removed += remove_stale_temps(entry, name, recursive=True)
    return removed


# ---- optimizer and RNG state -------------------------------------------------------------------
def save_optimizer(optimizer: torch.optim.Optimizer, path: str | os.PathLike) -> None:
    """``path.safetensors`` (state tensors) + ``path.json`` (param groups and scalars)."""
    path = Path(path)
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    atomic_write(path.with_suffix(".safetensors"), lambda tmp: save_file(tensors, tmp))
    meta = {"param_groups": state["param_groups"], "scalars": scalars}
    atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(meta)))


def load_optimizer(optimizer: torch.optim.Optimizer, path: str | os.PathLike) -> None:
    """Read optimizer state on the CPU; ``load_state_dict`` moves each entry to its parameter's device."""
    path = Path(path)
    tensors = load_file(str(path.with_suffix(".safetensors")))
    meta = json.loads(path.with_suffix(".json").read_text())
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_rng(path: str | os.PathLike, generators: dict[str, torch.Generator] | None = None) -> None:
    """torch's global CPU (and CUDA) RNG state and any named generators, as safetensors."""
    states = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states.update({f"torch_cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    states.update({f"gen_{name}": g.get_state() for name, g in (generators or {}).items()})
    atomic_write(path, lambda tmp: save_file(states, tmp))


def load_rng(path: str | os.PathLike, generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore what ``save_rng`` wrote."""
    states = load_file(str(path))
    torch.set_rng_state(states["torch_cpu"])
    cuda = [states[f"torch_cuda{i}"] for i in range(torch.cuda.device_count()) if f"torch_cuda{i}" in states]
    if cuda:
        torch.cuda.set_rng_state_all(cuda)
    for name, g in (generators or {}).items():
        g.set_state(states[f"gen_{name}"])
