"""Representation finetuning (ReFT) on the workbench: LoReFT, DiReFT and ConsReFT.

Edit hidden states, not weights: a ReftModel freezes a Hugging Face model and trains low-rank
interventions at chosen layers and prompt positions.

>>> from workbench import load_model                                        # doctest: +SKIP
>>> reft = get_reft_model(load_model(), ReftConfig(layers=(8, 16), rank=4, positions="f3+l3"))  # doctest: +SKIP
>>> reft.print_trainable_parameters()                                       # doctest: +SKIP
>>> train(reft, tokenize_pairs(reft.tokenizer, persona_pairs()), TrainConfig(epochs=20))  # doctest: +SKIP
>>> reft.generate("Who are you?")                                          # doctest: +SKIP
"""

from .classify import ReftForClassification
from .config import ReftConfig
from .data import collate, format_prompt, tokenize_classification, tokenize_pairs
from .generate import generate
from workbench.data.instructions import persona_pairs, persona_eval_prompts
from .interventions import ConsReFT, DiReFT, LoReFT, PerPositionGroups, build_intervention
from .model import ReftModel, ReftOutput, get_reft_model
from .loading import load_reft
from .saving import save_reft
from .train import TrainConfig, train

__all__ = [
    "ConsReFT", "DiReFT", "LoReFT", "PerPositionGroups", "ReftConfig", "ReftForClassification",
    "ReftModel", "ReftOutput", "TrainConfig", "build_intervention", "collate", "format_prompt",
    "generate", "get_reft_model", "load_reft", "persona_eval_prompts", "persona_pairs", "save_reft",
    "tokenize_classification", "tokenize_pairs", "train",
]
