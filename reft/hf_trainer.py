"""Hugging Face ``Trainer`` integration (transformers 5): train a ReftModel with HF's loop.

``ReftTrainer`` is a ``Trainer`` whose model is a ReftModel (or ReftForClassification): it pads
batches with the ReFT collator, keeps the ``prompt_length`` column (``remove_unused_columns`` is
turned off), saves checkpoints in the ReFT format (``reft_config.json`` +
``interventions.safetensors``, training arguments as JSON) and resumes from them. HF's own
optimizer/scheduler/RNG files are still written by HF and read back with ``weights_only=True``.

HF writes a checkpoint file by file, so a run killed while saving leaves a ``checkpoint-N`` without
a readable ``trainer_state.json`` (written last). ``train(resume_from_checkpoint=True)`` resumes
from the newest complete checkpoint and deletes the incomplete ones (HF's own choice would be the
newest folder, which then fails to load).

Under ``torchrun`` HF's loop runs DDP itself (per-device batches, rank 0 saves). ReftModel takes
``num_items_in_batch``, so HF divides the summed loss by the labelled tokens of all ranks and
accumulated micro-batches: a run on N ranks with ``per_device_train_batch_size`` b equals one
process with batch N·b. The ReFT weights resume at any world size; HF's own optimizer file does too
(replicated under DDP), its per-rank RNG files only at the same world size.

``ReftTrainer(..., parallel="fsdp")`` shards the frozen model (FSDP2, as ``reft.train``'s
``parallel="fsdp"``: each block, then the model's root) and leaves HF's DDP only the interventions,
which stay whole and replicated. ``TrainingArguments(fsdp=...)`` is refused: Accelerate's FSDP
plugin would shard the trained interventions with the frozen model, and on CPU it silently runs DDP
instead (Accelerate enables FSDP for accelerator devices only), so a CPU test could not tell.

>>> args = TrainingArguments("runs/hf", num_train_epochs=3, learning_rate=4e-3, report_to=[])  # doctest: +SKIP
>>> ReftTrainer(model=reft, args=args, train_dataset=rows).train()                             # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from transformers import Trainer

from workbench import distributed
from workbench.padding import pad_id_of
from workbench.runs import atomic_write

from .data import Collator
from .saving import load_weights_into, save_reft
from .train import frozen_hooked_model, no_decay_names, shard_frozen_model


def frozen_names(model) -> list[str]:
    """The names of the frozen model's parameters and buffers inside ``model``: DDP leaves them
    alone (FSDP owns them), so it broadcasts and all-reduces the interventions only."""
    hm = frozen_hooked_model(model)
    prefix = next(name for name, module in model.named_modules() if module is hm.model)
    prefix = f"{prefix}." if prefix else ""
    return [name for name, _ in [*model.named_parameters(), *model.named_buffers()] if name.startswith(prefix)]


class ReftTrainer(Trainer):
    """``Trainer`` for ReFT models; takes the same arguments, the collator defaults to ReFT's."""

    def __init__(self, model=None, args=None, data_collator=None, parallel: str = "ddp", **kwargs) -> None:
        if model is None:
            raise ValueError("ReftTrainer needs model= (a ReftModel from get_reft_model)")
        distributed.check_parallel(parallel)
        if args is not None and args.fsdp:
            raise ValueError(f"TrainingArguments(fsdp={args.fsdp!r}): Accelerate's FSDP plugin would shard the "
                             "trained interventions with the frozen model, and on CPU it runs DDP instead; "
                             "drop fsdp= and pass ReftTrainer(..., parallel='fsdp'), which shards the frozen "
                             "model only (CPU and GPU)")
        if parallel == "fsdp" and distributed.world_size() > 1:
            shard_frozen_model(model)
            model._ddp_params_and_buffers_to_ignore = frozen_names(model)  # read by DDP's constructor
        if data_collator is None:
            data_collator = Collator(pad_id_of(model.tokenizer))
        if args is not None and args.remove_unused_columns:
            args.remove_unused_columns = False  # prompt_length is read by the collator, not the forward
        if args is not None and args.ddp_find_unused_parameters is None:
            args.ddp_find_unused_parameters = False  # every intervention is used in every step
        super().__init__(model=model, args=args, data_collator=data_collator, **kwargs)

    def latest_checkpoint(self) -> Path | None:
        """The newest complete ``checkpoint-N`` in ``output_dir``; incomplete ones are removed."""
        found = []
        for folder in Path(self.args.output_dir).glob("checkpoint-*"):
            step = folder.name.split("-", 1)[1]
            if not step.isdigit():
                continue
            try:
                json.loads((folder / "trainer_state.json").read_text())
                found.append((int(step), folder))
            except (OSError, ValueError):  # killed while saving: never resume from it
                shutil.rmtree(folder, ignore_errors=True)
        return max(found)[1] if found else None

    def train(self, resume_from_checkpoint=None, **kwargs):
        """HF's ``train``; ``resume_from_checkpoint=True`` takes the newest complete checkpoint (or
        starts afresh when there is none)."""
        if resume_from_checkpoint is True:
            latest = self.latest_checkpoint()
            resume_from_checkpoint = str(latest) if latest is not None else None
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def get_decay_parameter_names(self, model) -> list[str]:
        """HF's choice minus R's parametrization (weight decay would zero R; see reft.train.no_decay_names)."""
        skip = no_decay_names(model)
        return [n for n in super().get_decay_parameter_names(model) if n not in skip]

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        save_reft(self.model, output_dir)
        text = self.args.to_json_string()
        atomic_write(Path(output_dir) / "training_args.json", lambda tmp: Path(tmp).write_text(text))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_weights_into(model if model is not None else self.model, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if best is not None:
            load_weights_into(self.model, best)
