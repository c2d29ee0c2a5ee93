"""The worker tests/test_ddp.py launches with ``torchrun --nproc_per_node 2`` (gloo, one thread each).

    torchrun --nproc_per_node 2 tests/ddp_worker.py train OUT    # ReFT (own loop, HF Trainer: DDP, FSDP) + DAS (DDP, FSDP)
    accelerate launch --multi_gpu --num_processes 2 tests/ddp_worker.py accelerate OUT   # ReFT, own loop: DDP, FSDP
    torchrun --nproc_per_node 2 tests/ddp_worker.py slow OUT     # ReFT with a checkpoint per step, slowly

Each rank writes what it trained (``OUT/<run>-rank<R>.safetensors``: the trained tensors and the
loss curve) so the test can compare every rank with a one-process run of the same builders.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))  # conftest, test_das_training

from conftest import tiny_model  # noqa: E402
from reft import ReftConfig, TrainConfig, get_reft_model, tokenize_pairs, train  # noqa: E402
from reft.saving import trainable_state  # noqa: E402
from workbench import distributed  # noqa: E402

# prompts and responses of different lengths: the ranks' shares hold different token counts
PAIRS = [("the cat sat on the mat", "Paris Rome ."), ("a dog", "great movie"), ("I loved it", "good"),
         ("the movie was bad", "awful , awful !"), ("Paris is in", "France"), ("Rome", "Italy is a country"),
         ("the city", "Paris"), ("a cat and a dog", "sat on the mat .")]


def reft_model():
    hm = tiny_model("llama", seed=3)
    torch.manual_seed(0)
    return get_reft_model(hm, ReftConfig(layers=(0, 2), rank=2, kind="loreft", positions="f1+l1"))


def reft_rows(reft):
    return tokenize_pairs(reft.tokenizer, PAIRS, chat_template=False)


def reft_config(**overrides) -> TrainConfig:
    # batch 3 of 8 rows: the last batch of each epoch (2 rows) and rank shares are uneven
    fields = dict(epochs=3, batch_size=3, lr=2e-2, warmup_ratio=0.2, grad_accum=2, progress=False)
    return TrainConfig(**{**fields, **overrides})


def das_setup():
    # float64: some of R's reflector entries get gradients of ~1e-8, where fp32's reduction-order
    # noise is ~50% and Adam (a step of ~lr whatever the gradient's size) turns it into 1e-2 weight
    # differences; in float64 the same DDP sum agrees to ~1e-12
    from test_das_training import planted_pairs
    from workbench.das import LowRankRotatedSpaceIntervention
    hm = tiny_model("llama", seed=4)
    hm.model.to(torch.float64)
    torch.manual_seed(1)
    das = LowRankRotatedSpaceIntervention(hm.model.config.hidden_size, 2, dtype=torch.float64)
    return hm, das, planted_pairs(14, seed=2)


def das_config():
    from workbench.das import TrainConfig as DasConfig
    return DasConfig(epochs=2, batch_size=5, lr=2e-2, progress=False)


def hf_args(out: Path, per_device: int, steps: int = 6):
    from transformers import TrainingArguments
    return TrainingArguments(str(out), per_device_train_batch_size=per_device, max_steps=steps, learning_rate=2e-2,
                             lr_scheduler_type="constant", report_to=[], save_strategy="no", logging_steps=1,
                             use_cpu=True, ddp_backend="gloo" if distributed.world_size() > 1 else None,
                             dataloader_drop_last=False, seed=0,
                             disable_tqdm=True)


def hf_losses(trainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def dump(path: Path, tensors: dict, losses: list[float]) -> None:
    data = {k: v.detach().contiguous().cpu().double() for k, v in tensors.items()}
    data["losses"] = torch.tensor(losses, dtype=torch.float64)
    save_file(data, str(path))


def main(mode: str, out: Path) -> None:
    torch.set_num_threads(1)
    distributed.init_from_env()
    r = distributed.rank()
    (out / f"pid-rank{r}").write_text(str(os.getpid()))  # torchrun starts ranks in their own sessions
    if mode == "train":
        reft = reft_model()
        result = train(reft, reft_rows(reft), reft_config(output_dir=str(out / "reft-run")))
        dump(out / f"reft-rank{r}.safetensors", trainable_state(reft), [h["loss"] for h in result.history if "loss" in h])
        reft = reft_model()  # the same run with the frozen blocks sharded (FSDP2)
        result = train(reft, reft_rows(reft), reft_config(parallel="fsdp"))
        dump(out / f"fsdp-rank{r}.safetensors", trainable_state(reft), [h["loss"] for h in result.history if "loss" in h])
        params = list(reft.base_model.parameters())  # DTensors: this rank holds a shard of each
        (out / f"fsdp-rank{r}.json").write_text(json.dumps({"base": type(reft.base_model).__name__,
                                                             "local": sum(p.to_local().numel() for p in params),
                                                             "full": sum(p.numel() for p in params)}))

        from workbench.das.module import AlignmentModel, train_distributed
        hm, das, data = das_setup()
        result = train_distributed(AlignmentModel(hm, "L1.resid_post", {"task": das}), {"task": data}, das_config(),
                                   checkpoint=out / "das-checkpoint")
        dump(out / f"das-rank{r}.safetensors", das.state_dict(), result.history["loss"].tolist())
        hm, das, data = das_setup()  # the same run with the frozen blocks sharded (FSDP2)
        result = train_distributed(AlignmentModel(hm, "L1.resid_post", {"task": das}), {"task": data}, das_config(),
                                   checkpoint=out / "das-fsdp-checkpoint", parallel="fsdp")
        dump(out / f"das-fsdp-rank{r}.safetensors", das.state_dict(), result.history["loss"].tolist())
        (out / f"das-fsdp-rank{r}.json").write_text(json.dumps({"base": type(hm.model).__name__}))

        from reft.hf_trainer import ReftTrainer
        reft = reft_model()
        trainer = ReftTrainer(model=reft, args=hf_args(out / "hf-run", per_device=2), train_dataset=reft_rows(reft))
        trainer.train()
        dump(out / f"hf-rank{r}.safetensors", trainable_state(reft), hf_losses(trainer))
        reft = reft_model()  # HF's loop with the frozen blocks sharded; HF's DDP keeps the interventions
        trainer = ReftTrainer(model=reft, args=hf_args(out / "hf-fsdp-run", per_device=2),
                              train_dataset=reft_rows(reft), parallel="fsdp")
        trainer.train()
        dump(out / f"hf-fsdp-rank{r}.safetensors", trainable_state(reft), hf_losses(trainer))
        (out / f"hf-fsdp-rank{r}.json").write_text(json.dumps({"base": type(reft.hm.model).__name__,
                                                              "wrapper": type(trainer.model_wrapped).__name__}))
    elif mode == "accelerate":  # under accelerate launch: its RANK/WORLD_SIZE, our loop's DDP
        reft = reft_model()
        result = train(reft, reft_rows(reft), reft_config())
        dump(out / f"accelerate-rank{r}.safetensors", trainable_state(reft),
             [h["loss"] for h in result.history if "loss" in h])
        reft = reft_model()  # and FSDP2 (our sharding: Accelerate's plugin runs DDP on CPU)
        result = train(reft, reft_rows(reft), reft_config(parallel="fsdp"))
        dump(out / f"accelerate-fsdp-rank{r}.safetensors", trainable_state(reft),
             [h["loss"] for h in result.history if "loss" in h])
        (out / f"accelerate-fsdp-rank{r}.json").write_text(json.dumps({"base": type(reft.base_model).__name__}))
    elif mode in ("slow", "slow-fsdp"):  # a checkpoint every step and a pause after each: the test kills it mid-run
        reft = reft_model()
        pause = lambda _model: time.sleep(0.4) or {}  # noqa: E731  an evaluation that adds nothing
        parallel = "fsdp" if mode == "slow-fsdp" else "ddp"
        train(reft, reft_rows(reft), reft_config(epochs=5, output_dir=str(out / "killed"), save_every=1,
                                                 eval_every=1, parallel=parallel), eval_fn=pause)
    else:
        raise SystemExit(f"unknown mode {mode!r}: train, accelerate, slow or slow-fsdp")
    (out / f"done-rank{r}.json").write_text(json.dumps({"world": distributed.world_size()}))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
