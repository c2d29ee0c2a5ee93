"""Saved runs, checkpoints and intervention files are group/other-readable under umask 022.

Temporary-file writes (mkstemp: 0600, mkdtemp: 0700) must not leak their private modes into
results: every writer goes through `workbench.runs.atomic_write` / `workbench.checkpoints.atomic_dir`
(which set the umask default) or writes files directly.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import tiny_model


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def unreadable(root: Path) -> list[str]:
    """Everything under ``root`` that group or others cannot read (folders: also enter)."""
    bad = []
    for path in root.rglob("*"):  # (pytest makes tmp_path itself private)
        mode = stat.S_IMODE(path.stat().st_mode)
        need = 0o055 if path.is_dir() else 0o044
        if mode & need != need:
            bad.append(f"{path.relative_to(root)}: {oct(mode)}")
    return bad


def test_every_writer_leaves_readable_files(tmp_path, umask_022):
    from reft import ReftConfig, get_reft_model
    from reft.saving import save_reft
    from workbench.checkpoints import atomic_dir, save_optimizer, save_rng
    from workbench.das.resume import Progress, save_progress
    from workbench.runs import atomic_write, save_run
    from workbench.steering import save_steering

    save_run(tmp_path / "run", pd.DataFrame({"a": [1, 2]}), {"command": "test"})
    atomic_write(tmp_path / "run" / "summary.json", lambda tmp: Path(tmp).write_text("{}"))
    hm = tiny_model("llama")
    save_reft(get_reft_model(hm, ReftConfig(layers=(1,), rank=2)), tmp_path / "reft")
    save_steering(tmp_path / "steering", "L1.resid_post", torch.randn(32))
    layer = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(layer.parameters())
    layer(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    with atomic_dir(tmp_path / "checkpoint") as folder:
        save_optimizer(optimizer, folder / "optimizer")
        save_rng(folder / "rng.safetensors")
    save_progress(tmp_path / "das-checkpoint", Progress(epoch=1), {"task": layer}, optimizer, torch.Generator())
    assert (tmp_path / "checkpoint" / "optimizer.safetensors").exists()
    assert unreadable(tmp_path) == []
