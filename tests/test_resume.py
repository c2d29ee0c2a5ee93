"""Interrupted training resumes to exactly what an uninterrupted run computes (DAS, ReFT loop).

The crash here is an exception raised while a checkpoint is being written (the worst moment);
tests/test_kill_resume.py sends real SIGKILLs to subprocesses.
"""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from reft import ReftConfig, get_reft_model
from reft.data import tokenize_pairs
from reft.train import TrainConfig as ReftTrainConfig, train
from workbench import checkpoints
from workbench.das import CounterfactualData, LowRankRotatedSpaceIntervention, TrainConfig, train_alignment
from workbench.das import resume as das_resume


class Crash(Exception):
    pass


def das_data(seed: int, n: int = 24) -> CounterfactualData:
    gen = torch.Generator().manual_seed(seed)
    ids = lambda: [[int(t) for t in torch.randint(3, 40, (5,), generator=gen)] for _ in range(n)]  # noqa: E731
    return CounterfactualData(ids(), [[-1]] * n, ids(), [[-1]] * n, torch.randint(0, 40, (n,), generator=gen))


def das_run(hm, checkpoint=None):
    torch.manual_seed(0)
    das = LowRankRotatedSpaceIntervention(32, 3)
    config = TrainConfig(epochs=4, batch_size=8, lr=2e-2, patience=10, progress=False)
    result = train_alignment(hm, "L1.resid_post", das, das_data(1), das_data(2), config, checkpoint=checkpoint)
    return das, result


@pytest.mark.parametrize("crash_at", [1, 2, 4])
def test_das_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, crash_at):
    hm = tiny_model("llama", seed=3)
    whole, expected = das_run(hm)
    real, calls = checkpoints.atomic_dir, []

    def crashing(path):  # fail inside the swap of the crash_at-th checkpoint, after its files are written
        calls.append(path)
        context = real(path)

        class Wrapped:
            def __enter__(self):
                return context.__enter__()

            def __exit__(self, *exc):
                if len(calls) == crash_at:
                    context.__exit__(Crash, Crash(), None)
                    raise Crash
                return context.__exit__(*exc)
        return Wrapped()

    monkeypatch.setattr(das_resume, "atomic_dir", crashing)
    with pytest.raises(Crash):
        das_run(hm, tmp_path / "ckpt")
    monkeypatch.setattr(das_resume, "atomic_dir", real)
    resumed, result = das_run(hm, tmp_path / "ckpt")
    assert torch.equal(resumed.rotation.weight, whole.rotation.weight)
    assert result.history.equals(expected.history) and result.val_iia == expected.val_iia
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporaries left


def test_das_checkpoint_of_other_tasks_is_refused(tmp_path):
    hm = tiny_model("llama", seed=3)
    das_run(hm, tmp_path / "ckpt")
    from workbench.das import train_multitask
    with pytest.raises(ValueError, match="a checkpoint for tasks \\['task'\\], not \\['other'\\]"):
        train_multitask(hm, "L1.resid_post", {"other": LowRankRotatedSpaceIntervention(32, 3)}, {"other": das_data(1)},
                        None, TrainConfig(epochs=1, progress=False), checkpoint=tmp_path / "ckpt")


def reft_run(out=None, dropout=0.1):
    hm = tiny_model("llama")
    torch.manual_seed(0)
    reft = get_reft_model(hm, ReftConfig(layers=(1,), rank=2, positions="f1+l1", dropout=dropout))
    rows = tokenize_pairs(hm.tokenizer, [("the cat", "sat on the mat"), ("a dog", "was in the city")] * 2,
                          chat_template=False)
    result = train(reft, rows, ReftTrainConfig(epochs=6, batch_size=2, lr=1e-2, save_every=2, progress=False,
                                               output_dir=None if out is None else str(out)))
    return reft, result


def test_reft_resume_with_dropout_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    """The dropout stream is part of the checkpoint, so a resumed run draws the same masks."""
    whole, expected = reft_run(tmp_path / "whole")
    import importlib
    reft_train = importlib.import_module("reft.train")
    real, count = reft_train.atomic_dir, []

    def crash_on_third(path):
        count.append(1)
        if len(count) == 3:
            raise Crash
        return real(path)

    monkeypatch.setattr(reft_train, "atomic_dir", crash_on_third)
    with pytest.raises(Crash):
        reft_run(tmp_path / "cut")
    monkeypatch.setattr(reft_train, "atomic_dir", real)
    resumed, result = reft_run(tmp_path / "cut")
    losses = lambda r: [h["loss"] for h in r.history if "loss" in h]  # noqa: E731
    assert losses(result) == losses(expected)
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
