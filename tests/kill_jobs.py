"""Long runs for the kill-and-resume test, run in a child process: ``python kill_jobs.py OUT [URL SHA]``.

Each job writes under ``OUT/<job>`` and resumes what a killed run left there; a finished job is
marked by ``OUT/<job>/DONE`` and skipped. The child prints ``START <job>`` (flushed) when a job
begins, so the parent can aim a SIGKILL inside it. Everything is seeded: an uninterrupted run and
a killed-and-resumed one must write the same results.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
torch.set_num_threads(1)

from conftest import tiny_model  # noqa: E402

JOBS = ("data_fetch", "reft_loop", "reft_hf", "das", "ravel", "sentiment", "memorize_sweep")


def reft_rows(hm):
    from reft.data import tokenize_pairs
    pairs = [("the cat", "sat on the mat"), ("a dog", "was in the city"), ("I thought", "it was great"),
             ("the movie", "was awful .")]
    return tokenize_pairs(hm.tokenizer, pairs * 2, chat_template=False)


def reft_model(hm):
    from reft import ReftConfig, get_reft_model
    torch.manual_seed(0)
    return get_reft_model(hm, ReftConfig(layers=(0, 2), rank=2, positions="f1+l1", dropout=0.1))


def reft_loop(out: Path) -> None:
    from reft.train import TrainConfig, train
    hm = tiny_model("llama")
    model = reft_model(hm)
    train(model, reft_rows(hm), TrainConfig(epochs=40, batch_size=2, lr=1e-2, save_every=1, progress=False,
                                            output_dir=str(out)))


def reft_hf(out: Path) -> None:
    from transformers import TrainingArguments

    from reft.hf_trainer import ReftTrainer
    from workbench.checkpoints import atomic_write
    hm = tiny_model("llama")
    model = reft_model(hm)
    args = TrainingArguments(str(out), num_train_epochs=25, per_device_train_batch_size=2, learning_rate=1e-2,
                             save_steps=1, save_total_limit=2, logging_steps=1, report_to=[], seed=0,
                             disable_tqdm=True, use_cpu=True, dataloader_num_workers=0)
    trainer = ReftTrainer(model=model, args=args, train_dataset=reft_rows(hm))
    trainer.train(resume_from_checkpoint=True)  # the newest complete checkpoint, if any
    trainer.save_model(str(out / "final"))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    atomic_write(out / "losses.json", lambda tmp: Path(tmp).write_text(json.dumps(losses)))


def das(out: Path) -> None:
    from safetensors.torch import save_file

    from test_resume import das_run
    from workbench.checkpoints import atomic_write
    hm = tiny_model("llama", seed=3)
    import workbench.das.train  # noqa: F401
    edit, result = das_run(hm, out / "checkpoint")
    atomic_write(out / "rotation.safetensors", lambda tmp: save_file(edit.state_dict(), tmp))
    atomic_write(out / "history.csv", lambda tmp: result.history.to_csv(tmp, index=False))


def ravel(out: Path) -> None:
    from probes.ravel import RavelConfig, compare_methods
    from test_ravel_probes import _planted_setup
    from workbench.das import TrainConfig
    from workbench.runs import save_run
    hm, setup = _planted_setup()
    config = RavelConfig(attributes=("V",), site="L1.resid_post", k=2, batch_size=64, progress=False,
                         methods=("pca", "das", "mdas"),
                         train=TrainConfig(epochs=4, batch_size=32, lr=2e-2, progress=False))
    table = compare_methods(hm, setup, config, resume_dir=out / "resume")
    save_run(out / "table", table.drop(columns=["fit_seconds", "seconds"]), {"job": "ravel"})


def sentiment(out: Path) -> None:
    from probes.sentiment import run as run_module
    from test_sentiment_planted import ADJECTIVES, VERBS, planted_model
    from workbench.data.reviews import toy_movie_reviews
    hm, _ = planted_model()  # the test vocabulary's reviews (as tests/test_sentiment_cli.py does)
    run_module.toy_movie_reviews = lambda tok, *a, **k: toy_movie_reviews(tok, 0.5, adjectives=ADJECTIVES, verbs=VERBS)
    run_module.run_sentiment(hm, run_module.SentimentConfig(
        layers=(0, 1, 2), das_layers=(1,), das_epochs=3, das_max_pairs=16, methods=("mean_diff", "pca", "das"),
        compare_layers=(0, 1, 2), sst_folder=None, batch_size=8), out)


def memorize_sweep(out: Path) -> None:
    from reft.memorize import MemorizeConfig
    from reft.memorize.sweep import memorize_sweep as sweep
    hm = tiny_model("llama")
    text = out.parent / "story.txt"
    if not text.exists():
        text.write_text(" ".join(["the cat sat on the mat and the dog was in the city"] * 4))
    sweep(hm, str(text), {"n_tokens": [4, 8], "layer": [0, 1, 2]}, MemorizeConfig(max_steps=25, lr=0.03), out=out,
          stop_after_failure=False, progress=False)


def data_fetch(out: Path, url: str, sha256: str, size: int) -> None:
    import dataclasses
    import os

    from workbench.data.fetch import fetch
    from workbench.data.registry import REGISTRY
    os.environ["WORKBENCH_DATA"] = str(out / "cache")
    entry = REGISTRY["ravel"]
    entry = dataclasses.replace(entry, archive=dataclasses.replace(entry.archive, url=url, sha256=sha256, size=size))
    fetch("ravel", progress=False, entry=entry)


def main() -> None:
    out = Path(sys.argv[1])
    for job in JOBS:
        folder = out / job
        if (folder / "DONE").exists():
            continue
        print(f"START {job}", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        if job == "data_fetch":
            data_fetch(folder, sys.argv[2], sys.argv[3], int(sys.argv[4]))
        else:
            globals()[job](folder)
        (folder / "DONE").write_text("")
        print(f"END {job}", flush=True)


if __name__ == "__main__":
    main()
