"""Hugging Face ``Trainer`` integration (transformers 5): train a ReftModel with HF's loop.

``ReftTrainer`` is a ``Trainer`` whose model is a ReftModel (or ReftForClassification): it pads
batches with the ReFT collator, keeps the ``prompt_length`` column (``remove_unused_columns`` is
turned off), saves checkpoints in the ReFT format (``reft_config.json`` +
``interventions.safetensors``, training arguments as JSON) and resumes from them. HF's own
optimizer/scheduler/RNG files are still written by HF and read back with ``weights_only=True``.

>>> args = TrainingArguments("runs/hf", num_train_epochs=3, learning_rate=4e-3, report_to=[])  # doctest: +SKIP
>>> ReftTrainer(model=reft, args=args, train_dataset=rows).train()                             # doctest: +SKIP
"""

from __future__ import annotations

import os

from transformers import Trainer

from workbench.padding import pad_id_of

from .data import Collator
from .saving import load_weights_into, save_reft
from .train import no_decay_names


class ReftTrainer(Trainer):
    """``Trainer`` for ReFT models; takes the same arguments, the collator defaults to ReFT's."""

    def __init__(self, model=None, args=None, data_collator=None, **kwargs) -> None:
        if model is None:
            raise ValueError("ReftTrainer needs model= (a ReftModel from get_reft_model)")
        if data_collator is None:
            data_collator = Collator(pad_id_of(model.tokenizer))
        if args is not None and args.remove_unused_columns:
            args.remove_unused_columns = False  # prompt_length is read by the collator, not the forward
        super().__init__(model=model, args=args, data_collator=data_collator, **kwargs)

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
        with open(os.path.join(output_dir, "training_args.json"), "w") as handle:
            handle.write(self.args.to_json_string())

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_weights_into(model if model is not None else self.model, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if best is not None:
            load_weights_into(self.model, best)
