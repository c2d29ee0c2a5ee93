"""Instruction data for ReFT: prompt formatting, tokenization with response-only labels, batching.

Training and generation format prompts with the same function, so the intervened positions (the
prompt's first/last tokens) are the same tokens in both. Sequences are right-padded for training;
``prompt_lengths`` tells the intervention where each prompt ends.

>>> tok = word_tokenizer()                                                     # doctest: +SKIP
>>> rows = tokenize_pairs(tok, [("the cat", "sat")], chat_template=False)      # doctest: +SKIP
>>> collate(rows, pad_id=0)["labels"]                                          # doctest: +SKIP
tensor([[-100, -100,    8,    2]])
"""

from __future__ import annotations

from typing import Sequence

import torch


IGNORE = -100


def has_chat_template(tokenizer) -> bool:
    return getattr(tokenizer, "chat_template", None) is not None


def format_prompt(tokenizer, instruction: str, chat_template: bool | None = None,
                  system_prompt: str | None = None) -> str:
    """The prompt text for ``instruction``: the tokenizer's chat template (when it has one and
    ``chat_template`` is not False) ending with the assistant turn's header, else the instruction.

    >>> format_prompt(tok, "Hi", chat_template=False)                          # doctest: +SKIP
    'Hi'
    """
    use_chat = has_chat_template(tokenizer) if chat_template is None else chat_template
    if not use_chat:
        return instruction
    if not has_chat_template(tokenizer):
        raise ValueError("chat_template=True, but the tokenizer has no chat template; pass chat_template=False")
    messages = [{"role": "user", "content": instruction}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, prompt_text: str, chat_template: bool) -> list[int]:
    """Token ids of a formatted prompt (a chat template already holds its special tokens)."""
    return tokenizer(prompt_text, add_special_tokens=not chat_template)["input_ids"]


def tokenize_pairs(tokenizer, pairs: Sequence[tuple[str, str]], chat_template: bool | None = None,
                   system_prompt: str | None = None, max_length: int = 512,
                   add_eos: bool = True) -> list[dict]:
    """(instruction, response) pairs -> rows with ``input_ids``, ``labels`` (-100 on the prompt) and
    ``prompt_length``. The response is tokenized on its own and appended, so the prompt's tokens are
    exactly those seen at generation time; an EOS token ends it (so generation learns to stop).
    """
    use_chat = has_chat_template(tokenizer) if chat_template is None else chat_template
    rows = []
    for i, (instruction, response) in enumerate(pairs):
        prompt = encode_prompt(tokenizer, format_prompt(tokenizer, instruction, use_chat, system_prompt), use_chat)
        answer = tokenizer(response, add_special_tokens=False)["input_ids"]
        if add_eos and tokenizer.eos_token_id is not None:
            answer = answer + [tokenizer.eos_token_id]
        if not prompt or not answer:
            raise ValueError(f"example {i} has an empty prompt or response: {(instruction, response)!r}")
        ids = (prompt + answer)[:max_length]
        if len(prompt) >= len(ids):
            raise ValueError(f"example {i}: the prompt alone has {len(prompt)} tokens >= max_length {max_length}; "
                             f"raise max_length or shorten the prompt")
        rows.append({"input_ids": ids, "labels": [IGNORE] * len(prompt) + ids[len(prompt):],
                     "prompt_length": len(prompt)})
    return rows


def tokenize_classification(tokenizer, texts: Sequence[str], labels: Sequence[int],
                            max_length: int = 256) -> list[dict]:
    """Texts with integer class labels -> rows for ``ReftForClassification``."""
    rows = []
    for text, label in zip(texts, labels):
        ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
        rows.append({"input_ids": ids, "labels": int(label)})
    return rows


def collate(rows: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad rows into ``input_ids``/``attention_mask``/``labels`` (B, T) and ``prompt_lengths`` (B,)
    (class labels (B,) for classification rows)."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, r in enumerate(rows):
        ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
        mask[i, :len(r["input_ids"])] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if rows and isinstance(rows[0].get("labels"), list):
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)  # (B, T)
        for i, r in enumerate(rows):
            labels[i, :len(r["labels"])] = torch.tensor(r["labels"])
        batch["labels"] = labels
        batch["prompt_lengths"] = torch.tensor([r["prompt_length"] for r in rows])  # (B,)
    elif rows and "labels" in rows[0]:
        batch["labels"] = torch.tensor([r["labels"] for r in rows])  # (B,)
    return batch


class Collator:
    """A picklable ``collate`` with a fixed pad id (for DataLoader workers and HF Trainer)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        return collate(rows, self.pad_id)
