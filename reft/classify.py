"""Classification with ReFT: interventions on the input's first/last tokens plus a small head.

The head reads the final hidden state at one token: the last real token for decoders (it has seen
the whole input), the first for encoders (BERT's [CLS]). The forward stops right after the base
model's body, so no vocabulary projection is computed.

The head is ``Linear(d, C)`` (``head="linear"``) or, as in the ReFT paper's GLUE runs on RoBERTa,
BERT/RoBERTa's classification head ``Linear(d, d) -> tanh -> dropout -> Linear(d, C)``
(``head="mlp"``). The paper does not count the head in its parameter shares;
``num_head_parameters`` gives it so that reports can leave it out too.

>>> clf = ReftForClassification(get_reft_model(hm, ReftConfig(layers=(1,), positions="f1+l1")), 2)  # doctest: +SKIP
>>> clf(**collate(tokenize_classification(tok, ["good"], [1]), 0)).loss                              # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import cross_entropy

from workbench.adapters import first_tensor
from workbench.hooks import StopForward
from workbench.orthogonal import master_dtype
from workbench.padding import last_real_index, leading_pads

from .model import ReftModel, ReftOutput
from .saving import save_reft

POOLINGS = ("last", "first")
HEADS = ("linear", "mlp")


def classification_head(d: int, num_classes: int, kind: str = "linear", dropout: float = 0.0,
                        dtype: torch.dtype | None = None, device=None) -> nn.Module:
    """A fresh head on a pooled (B, d) state: ``Linear(d, C)``, or for ``kind="mlp"`` BERT/RoBERTa's
    classification head ``Linear(d, d) -> tanh -> dropout -> Linear(d, C)``.

    >>> classification_head(8, 2, "mlp")(torch.zeros(3, 8)).shape
    torch.Size([3, 2])
    """
    if kind not in HEADS:
        raise ValueError(f"head {kind!r}: expected one of {HEADS}; 'linear' is the default, 'mlp' the ReFT "
                         f"paper's GLUE head (BERT/RoBERTa's classification head)")
    out = nn.Linear(d, num_classes, dtype=dtype, device=device)
    if kind == "linear":
        return out
    return nn.Sequential(nn.Linear(d, d, dtype=dtype, device=device), nn.Tanh(), nn.Dropout(dropout), out)


class ReftForClassification(nn.Module):
    """A ReftModel and a head (``Linear(d, num_classes)``, or ``head="mlp"``: dense, tanh, dropout,
    out); trainable: interventions and head."""

    def __init__(self, reft: ReftModel, num_classes: int, pooling: str | None = None, dropout: float = 0.0,
                 head: str = "linear") -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes {num_classes}: a classifier needs at least 2 classes")
        if head not in HEADS:  # before the base model is touched
            classification_head(1, 2, head)
        is_encoder = getattr(reft.hm.model.config, "model_type", "") in ("bert", "roberta")
        pooling = pooling or ("first" if is_encoder else "last")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: expected one of {POOLINGS}")
        self.reft, self.num_classes, self.pooling = reft, num_classes, pooling
        self.dropout = nn.Dropout(dropout)
        # On the last layer's device; fp32 master values for half-precision models (like the
        # interventions'), applied to the pooled state cast to the head's dtype.
        last = reft.hm.device_of(f"L{reft.hm.n_layers - 1}.resid_post")
        self.head_kind, self.head_dtype = head, master_dtype(reft.hm.dtype)
        self.head = classification_head(reft.hm.layout.d_model, num_classes, head, dropout, self.head_dtype, last)

    @property
    def hm(self):
        return self.reft.hm

    @property
    def tokenizer(self):
        return self.reft.hm.tokenizer

    def describe_task(self) -> dict:
        return {"task": "classification", "num_classes": self.num_classes, "pooling": self.pooling,
                "head_dropout": self.dropout.p, "head": self.head_kind}

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def num_head_parameters(self) -> int:
        """The head's share of `num_trainable_parameters` (the ReFT paper leaves it out of its counts)."""
        return sum(p.numel() for p in self.head.parameters())

    def print_trainable_parameters(self) -> None:
        trainable, base = self.num_trainable_parameters(), self.reft.num_base_parameters()
        print(f"trainable params: {trainable:,} (interventions + head) || all params: {base + trainable:,} || "
              f"trainable%: {100 * trainable / base:.4f}")

    def final_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The base model body's last hidden states (B, T, d) with the interventions applied."""
        found = {}

        def grab(_module, _args, output):
            found["h"] = first_tensor(output)  # (B, T, d)
            raise StopForward  # skip the vocabulary projection

        handle = self.reft.hm.model.base_model.register_forward_hook(grab)
        try:
            with self.reft.intervening():
                self.reft.hm.forward({"input_ids": input_ids, "attention_mask": attention_mask}, use_cache=False)
        except StopForward:
            pass
        finally:
            handle.remove()
        return found["h"]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> ReftOutput:
        """Class logits (B, C) and, with ``labels`` (B,), the cross-entropy loss."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.final_hidden(input_ids, attention_mask)  # (B, T, d)
        rows = torch.arange(hidden.shape[0], device=hidden.device)  # (B,)
        if self.pooling == "first":
            index = leading_pads(attention_mask)  # (B,) first real token
        else:
            index = last_real_index(attention_mask)  # (B,) last real token
        pooled = hidden[rows, index]  # (B, d)
        logits = self.head(self.dropout(pooled).to(self.head_dtype))  # (B, C)
        loss = None if labels is None else cross_entropy(logits.float(), labels.to(logits.device))
        return ReftOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def predict(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted classes (B,)."""
        return self.forward(input_ids, attention_mask).logits.argmax(-1)

    def save(self, folder) -> None:
        save_reft(self, folder)
