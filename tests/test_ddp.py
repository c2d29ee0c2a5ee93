"""Distributed training and sharded sweeps: 2 CPU processes (torchrun, gloo, one thread each).

A DDP run equals a one-process run with the same global batch (ReFT's own loop under torchrun and
under ``accelerate launch``, the HF Trainer, DAS), so does an FSDP2 run of ReFT's own loop (frozen
blocks sharded, interventions replicated) and of DAS, a killed DDP or FSDP run resumes (at another world size), sweeps split across shards merge and
resume, and interventions follow a model dispatched over devices (some modules on ``meta``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import ddp_worker as worker
from conftest import tiny_model
from reft import ReftConfig, get_reft_model, train
from reft.saving import WEIGHTS_FILE, trainable_state
from workbench.distributed import Shard, merge_parts, missing_parts, part_name, run_parts

WORKER = Path(worker.__file__)
ROOT = WORKER.parents[1]


# accelerate launch's torchrun path (--multi_gpu: no GPU needed, gloo on the CPU); its --cpu path
# starts one process unless mpirun is there (see docs/scaling.md). --main_process_port 0: a free port
ACCELERATE = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]


def torchrun(mode: str, out: Path, wait: bool = True, launcher: list[str] | None = None) -> subprocess.Popen:
    """``torchrun --standalone --nproc_per_node 2 tests/ddp_worker.py MODE OUT`` (or another
    ``launcher``) in its own session."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launcher = launcher or [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = [*launcher, str(WORKER), mode, str(out)]
    log = open(out / f"{mode}.log", "w")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    if wait:
        assert process.wait(timeout=400) == 0, (out / f"{mode}.log").read_text()[-3000:]
    return process


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def as_double(tensors: dict, losses: list[float]) -> dict:
    data = {k: v.detach().double() for k, v in tensors.items()}
    data["losses"] = torch.tensor(losses, dtype=torch.float64)
    return data


def max_diffs(got: dict, want: dict) -> tuple[float, float]:
    assert set(got) == set(want) and got["losses"].shape == want["losses"].shape
    loss = float((got["losses"] - want["losses"]).abs().max())
    weight = max(float((got[k] - want[k]).abs().max()) for k in want if k != "losses")
    return loss, weight


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    torchrun("train", out)
    return out


@pytest.fixture(scope="module")
def accelerate_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("accelerate")
    torchrun("accelerate", out, launcher=ACCELERATE)
    return out


@pytest.fixture(scope="module")
def single_runs(one_thread, tmp_path_factory):
    """The same three trainings in this one process, with each run's global batch."""
    from reft.hf_trainer import ReftTrainer
    from workbench.das import train_multitask

    reft = worker.reft_model()
    result = train(reft, worker.reft_rows(reft), worker.reft_config())
    runs = {"reft": as_double(trainable_state(reft), [h["loss"] for h in result.history if "loss" in h])}
    hm, das, data = worker.das_setup()  # the reference: the existing one-process DAS trainer
    result = train_multitask(hm, "L1.resid_post", {"task": das}, {"task": data}, None, worker.das_config())
    runs["das"] = as_double(das.state_dict(), result.history["loss"].tolist())
    reft = worker.reft_model()
    args = worker.hf_args(tmp_path_factory.mktemp("hf-single"), per_device=2 * 2)  # 2 ranks x 2
    trainer = ReftTrainer(model=reft, args=args, train_dataset=worker.reft_rows(reft))
    trainer.train()
    runs["hf"] = as_double(trainable_state(reft), worker.hf_losses(trainer))
    return runs


@pytest.mark.parametrize("run", ["reft", "hf", "das", "fsdp", "hf-fsdp", "das-fsdp", "accelerate", "accelerate-fsdp"])
def test_ddp_equals_one_process_with_the_global_batch(request, single_runs, run):
    folder = request.getfixturevalue("accelerate_run" if run.startswith("accelerate") else "ddp_run")
    same = {"fsdp": "reft", "accelerate": "reft", "accelerate-fsdp": "reft", "hf-fsdp": "hf", "das-fsdp": "das"}
    want = single_runs[same.get(run, run)]  # one process
    assert len(want["losses"]) == 6 and float(want["losses"][0] - want["losses"][-1]) != 0  # it trained
    figures = {}
    for rank in (0, 1):
        got = {k: v.double() for k, v in load_file(str(folder / f"{run}-rank{rank}.safetensors")).items()}
        figures[rank] = max_diffs(got, want)
        # fp32 runs (ReFT): reduction-order rounding; the DAS run is float64 (see ddp_worker.das_setup)
        limit = 1e-9 if run.startswith("das") else 1e-5
        assert figures[rank][1] < limit, (run, rank, figures)
        assert figures[rank][0] < 1e-5, (run, rank, figures)
    print(f"\n{run}: 2 ranks vs one process: max |loss diff| {max(f[0] for f in figures.values()):.2e}, "
          f"max |weight diff| {max(f[1] for f in figures.values()):.2e}")


def test_fsdp_shards_the_frozen_model_and_accelerate_starts_two_ranks(ddp_run, accelerate_run):
    shards = [json.loads((ddp_run / f"fsdp-rank{r}.json").read_text()) for r in (0, 1)]
    assert all(s["base"].startswith("FSDP") for s in shards)  # fully_shard applied to the frozen model
    for name, folder in [("das-fsdp", ddp_run), ("hf-fsdp", ddp_run), ("accelerate-fsdp", accelerate_run)]:
        assert all(json.loads((folder / f"{name}-rank{r}.json").read_text())["base"].startswith("FSDP") for r in (0, 1))
    # HF's DDP wraps the ReftModel but leaves the sharded frozen model to FSDP
    assert json.loads((ddp_run / "hf-fsdp-rank0.json").read_text())["wrapper"] == "DistributedDataParallel"
    assert sum(s["local"] for s in shards) == shards[0]["full"] and shards[0]["local"] < shards[0]["full"]
    assert json.loads((accelerate_run / "done-rank1.json").read_text()) == {"world": 2}


def test_rank_zero_alone_writes_the_run(ddp_run):
    folder = ddp_run / "reft-run"
    assert (folder / WEIGHTS_FILE).is_file() and (folder / "history.json").is_file()
    state = json.loads((folder / "checkpoint" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["finished"]
    assert not list(folder.glob(".*-*"))  # no temporaries left by a second writer
    assert json.loads((ddp_run / "done-rank1.json").read_text()) == {"world": 2}


@pytest.mark.parametrize("mode", ["slow", "slow-fsdp"])
def test_a_killed_ddp_run_resumes_at_another_world_size(one_thread, tmp_path, mode):
    process = torchrun(mode, tmp_path, wait=False)
    state = tmp_path / "killed" / "checkpoint" / "trainer_state.json"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        try:
            if json.loads(state.read_text())["step"] >= 3:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    assert process.poll() is None, "the run ended before it could be killed: " + (tmp_path / f"{mode}.log").read_text()[-2000:]
    ranks = [int((tmp_path / f"pid-rank{r}").read_text()) for r in (0, 1)]
    for pid in ranks:  # kill -9 mid-run: both ranks, then torchrun
        os.kill(pid, signal.SIGKILL)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    while any(alive(pid) for pid in ranks):
        time.sleep(0.05)  # until nothing writes the checkpoint any more
    killed_at = json.loads(state.read_text())["step"]
    total = 5 * 2  # 5 epochs x ceil(ceil(8 / 3) / 2) optimizer steps
    assert 3 <= killed_at < total

    config = worker.reft_config(epochs=5, output_dir=str(tmp_path / "killed"), save_every=1, eval_every=1)
    resumed = worker.reft_model()  # one process now: the checkpoint holds the global batch's state
    result = train(resumed, worker.reft_rows(resumed), config, eval_fn=lambda _model: {})
    straight = worker.reft_model()
    reference = train(straight, worker.reft_rows(straight), worker.reft_config(epochs=5), eval_fn=lambda _model: {})
    assert result.steps == reference.steps == total
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert max(abs(a - b["loss"]) for a, b in zip(losses, reference.history)) < 1e-5
    for key, value in trainable_state(straight).items():
        assert torch.allclose(trainable_state(resumed)[key], value, atol=1e-6), key


# ---- in one process -----------------------------------------------------------------------------
def test_the_module_tree_holds_the_frozen_model_and_saves_only_interventions(tmp_path):
    hm = tiny_model("gpt2")  # GPT-2 has dropout: train() must leave the frozen model in eval mode
    reft = get_reft_model(hm, ReftConfig(layers=(1,), rank=2, positions="f1+l1"))
    assert any(m is hm.model for m in reft.modules())
    assert {n for n, p in reft.named_parameters() if p.requires_grad} == {
        n for n, _ in reft.interventions.named_parameters(prefix="interventions")}
    reft.train()
    assert all(not m.training for m in hm.model.modules()) and reft.interventions.training
    reft.save(tmp_path)
    saved = load_file(str(tmp_path / WEIGHTS_FILE))
    assert saved and all(k.startswith("interventions.") for k in saved)


def test_alignment_module_alone_equals_train_multitask(one_thread):
    from workbench.das import train_multitask
    from workbench.das.module import AlignmentModel, train_distributed

    hm, das, data = worker.das_setup()
    want = train_multitask(hm, "L1.resid_post", {"task": das}, {"task": data}, None, worker.das_config())
    hm, again, data = worker.das_setup()
    module = AlignmentModel(hm, "L1.resid_post", {"task": again})
    got = train_distributed(module, {"task": data}, worker.das_config())
    assert got.history["loss"].tolist() == want.history["loss"].tolist()
    # float64 weights agree to ~5e-11, not bit for bit: the losses are equal, the last bits of
    # the ~1e-8 reflector gradients are not (not traced further), and Adam scales those up
    assert all(torch.allclose(v, again.state_dict()[k], rtol=0, atol=1e-9) for k, v in das.state_dict().items())
    assert [n for n, p in module.named_parameters() if p.requires_grad] == ["interventions.task.rotation.reflectors"]


def test_shards_split_merge_and_resume_at_any_world_size(tmp_path):
    cells = [(layer, comp) for layer in range(3) for comp in ("a", "b")]
    calls = []

    def compute(cell):
        calls.append(cell)
        return pd.DataFrame({"layer": [cell[0]], "component": [cell[1]], "value": [cell[0] * 10 + len(calls)]})

    run_parts(cells, compute, tmp_path, Shard(0, 3), progress=False)
    assert calls == [cells[0], cells[3]] and merge_parts(cells, tmp_path) is None
    assert missing_parts(cells, tmp_path) == [cells[1], cells[2], cells[4], cells[5]]
    run_parts(cells, compute, tmp_path, Shard(1, 2), progress=False)  # another world size: skips cell 3
    run_parts(cells, compute, tmp_path, Shard(0, 2), progress=False)
    assert sorted(calls) == sorted(cells)  # every cell computed exactly once
    merged = merge_parts(cells, tmp_path)
    assert list(zip(merged["layer"], merged["component"])) == cells  # cell order, not finishing order
    assert part_name((2, "b")) == "2_b"


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "0/0"])
def test_bad_shards_name_the_fix(text):
    with pytest.raises(ValueError, match="RANK/WORLD"):
        Shard.parse(text)


def test_interventions_follow_a_dispatched_model_and_a_wrong_device_fails():
    """Layer 2 and the head on ``meta`` behind accelerate's device hooks (as a device_map dispatch
    leaves them): each intervention lives and runs where its site's states are."""
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module

    hm = tiny_model("llama")
    model = hm.model
    for module in (model.model.layers[2], model.model.norm, model.lm_head):
        module.to("meta")
        add_hook_to_module(module, AlignDevicesHook(execution_device="meta", io_same_device=False))
    reft = get_reft_model(hm, ReftConfig(layers=(0, 2), rank=2, positions="f1+l1"))
    seen = []
    for edit in reft.interventions.values():
        edit.register_forward_hook(lambda m, args, out: seen.append((args[0].device.type,
                                                                     next(m.parameters()).device.type)))
    logits = reft(torch.tensor([[3, 4, 5, 6]])).logits
    assert logits.device.type == "meta"
    assert seen == [("cpu", "cpu"), ("meta", "meta")]  # L0 on the CPU, L2 on meta
    # the loss is taken where the head is (labels on the input's device, as on a GPU dispatch)
    assert reft(torch.tensor([[3, 4, 5, 6]]), labels=torch.tensor([[-100, -100, 5, 6]])).loss.device.type == "meta"
    assert {p.device.type for p in reft.intervention_at(2).parameters()} == {"meta"}
    with pytest.raises(RuntimeError, match="meta"):  # a cpu state into the meta intervention: loud
        reft.intervention_at(2)(torch.zeros(1, 2, 32))


def test_patch_shards_merge_into_the_whole_sweep(tmp_path, capsys):
    from unittest import mock

    from workbench.cli import main
    from workbench.sweeps import patch_sweep

    argv = ["patch", "--base", "the cat sat", "--source", "a dog sat", "--target", "cat", "--foil", "dog",
            "--out", str(tmp_path / "run")]
    with mock.patch("workbench.models.load_model", lambda *a, **k: tiny_model("llama")):
        assert main([*argv, "--shard", "1/2"]) == 0
        assert "still missing" in capsys.readouterr().out and not (tmp_path / "run" / "results.csv").exists()
        assert main([*argv, "--shard", "0/2"]) == 0  # the last shard finds every part and merges
    merged = pd.read_csv(tmp_path / "run" / "results.csv")
    hm = tiny_model("llama")
    whole = patch_sweep(hm, "the cat sat", "a dog sat", target="cat", foil="dog")
    assert list(merged["layer"]) == list(whole["layer"]) and list(merged["position"]) == list(whole["position"])
    assert max(abs(merged["value"] - whole["value"])) < 1e-5


def test_memorize_sweep_shards_merge_into_the_whole_table(tmp_path, one_thread):
    from reft.memorize import MemorizeConfig, memorize_sweep
    from reft.memorize.sweep import TIMING

    text = tmp_path / "words.txt"
    text.write_text("the cat sat on the mat . a dog was in the city , Paris is in France ! " * 4)
    base = MemorizeConfig(key="the movie {i}", lr=0.05, max_steps=2, verify=False)
    grid = {"n_tokens": [2], "layer": [0, 2]}  # two groups, one per layer
    hm = tiny_model("llama")
    first = memorize_sweep(hm, str(text), grid, base, out=tmp_path / "sharded", progress=False,
                           stop_after_failure=False, shard=Shard(1, 2))
    assert set(first["layer"]) == {2}  # the second group only
    merged = memorize_sweep(hm, str(text), grid, base, out=tmp_path / "sharded", progress=False,
                            stop_after_failure=False, shard=Shard(0, 2))
    again = memorize_sweep(hm, str(text), grid, base, out=tmp_path / "sharded", progress=False,
                           stop_after_failure=False)  # one process: every run is in a log, nothing runs
    whole = memorize_sweep(hm, str(text), grid, base, out=tmp_path / "whole", progress=False, stop_after_failure=False)
    drop = lambda df: df.drop(columns=[c for c in TIMING if c in df.columns]).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(drop(merged), drop(whole))
    pd.testing.assert_frame_equal(drop(again), drop(whole))
    assert sorted(p.name for p in (tmp_path / "sharded" / "parts").iterdir()) == [
        "results-0-of-2.jsonl", "results-1-of-2.jsonl"]


def test_ravel_shards_leave_parts_the_whole_run_reuses(tmp_path, monkeypatch, one_thread):
    from probes import ravel as ravel_module
    from probes.ravel import REFERENCE, RavelConfig, compare_methods
    from test_ravel_probes import _planted_setup
    from workbench.das import TrainConfig as DasConfig

    hm, setup = _planted_setup()
    config = RavelConfig(attributes=("V",), site="L1.resid_post", k=2, batch_size=64, progress=False,
                         methods=("pca", "mean_diff"), train=DasConfig(epochs=1, progress=False))
    cells = ["pca", "mean_diff", REFERENCE]
    parts = [compare_methods(hm, setup, config, tmp_path, only=shard.take(cells)) for shard in (Shard(0, 2), Shard(1, 2))]
    assert [sorted(set(p.method)) for p in parts] == [sorted(["pca", REFERENCE]), ["mean_diff"]]
    monkeypatch.setattr(ravel_module, "fit_method", lambda *a, **k: pytest.fail("a finished method was fitted again"))
    merged = compare_methods(hm, setup, config, tmp_path)  # every method from the shards' parts
    monkeypatch.undo()
    whole = compare_methods(hm, setup, config)
    columns = ["method", "attribute", "cause", "isolate", "disentangle"]
    pd.testing.assert_frame_equal(merged[columns], whole[columns])


def test_an_accelerate_cpu_launch_that_would_not_be_distributed_says_so(monkeypatch):
    from workbench import distributed

    # what `accelerate launch --cpu --num_processes 2` sets without mpirun (checked by hand: one
    # process, no RANK/WORLD_SIZE), and with mpirun (MPI's sizes)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with pytest.warns(RuntimeWarning, match="--multi_gpu --num_processes N"):
        assert distributed.init_from_env() is False
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="2 MPI processes.*torchrun --nproc_per_node N"):
        distributed.init_from_env()
