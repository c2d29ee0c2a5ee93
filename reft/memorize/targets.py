"""What to memorize: key prompts and target token sequences (natural, shuffled, random; K pairs).

A task is K key prompts (equal token counts, so no padding) and K targets of N tokens each. The
model reads ``key_i + target_i[:-1]`` and is trained to predict ``target_i``. Variants (the ReFT
paper's): ``natural`` (the text's first K x N tokens, in order), ``shuffled`` (the same tokens,
randomly permuted: same unigram statistics, no syntax) and ``random`` (uniform token ids, special
tokens excluded).

>>> task = build_task(ids=list(range(10, 30)), prompt_ids=lambda k: [1, 2], n_tokens=4, n_pairs=2)
>>> task.prompt_ids.shape, task.target_ids.tolist()
(torch.Size([2, 2]), [[10, 11, 12, 13], [14, 15, 16, 17]])
>>> task.input_ids().shape                                  # key + target[:-1]
torch.Size([2, 5])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

VARIANTS = ("natural", "shuffled", "random")
DEFAULT_KEY = "ALIC#ID{i}->"  # the paper's arbitrary key; {i} numbers the pairs (1, 2, ...)


@dataclass(frozen=True, eq=False)
class MemorizationTask:
    """``prompt_ids`` (K, P) keys, ``target_ids`` (K, N) values; ``keys`` their texts (if any)."""

    prompt_ids: torch.Tensor
    target_ids: torch.Tensor
    variant: str = "natural"
    keys: tuple[str, ...] = ()

    @property
    def n_pairs(self) -> int:
        return int(self.target_ids.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.target_ids.shape[1])

    @property
    def prompt_length(self) -> int:
        return int(self.prompt_ids.shape[1])

    def input_ids(self) -> torch.Tensor:
        """Teacher-forcing input (K, P + N - 1): the last target token is never an input."""
        return torch.cat([self.prompt_ids, self.target_ids[:, :-1]], dim=1)  # (K, P + N - 1)


def key_texts(template: str, n_pairs: int) -> list[str]:
    """Key prompts for ``n_pairs`` pairs; numbers are zero-padded so all keys have equal length.

    >>> key_texts("ALIC#ID{i}->", 1), key_texts("K{i}:", 10)[8:]
    (['ALIC#ID1->'], ['K09:', 'K10:'])
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs {n_pairs} out of range: need at least 1 key -> value pair")
    if n_pairs > 1 and "{i}" not in template:
        raise ValueError(f"key {template!r} has no '{{i}}' to number {n_pairs} pairs; use e.g. 'ALIC#ID{{i}}->'")
    width = len(str(n_pairs))
    return [template.replace("{i}", f"{i:0{width}d}" if n_pairs > 1 else str(i)) for i in range(1, n_pairs + 1)]


def special_ids(tokenizer) -> set[int]:
    """Token ids never used as random targets (special and added tokens)."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids |= set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    return {int(i) for i in ids}


def build_task(ids: Sequence[int], prompt_ids: Callable[[str], list[int]], n_tokens: int, variant: str = "natural",
               n_pairs: int = 1, key: str = DEFAULT_KEY, seed: int = 0, vocab_size: int | None = None,
               exclude: set[int] | None = None) -> MemorizationTask:
    """A task from a token stream ``ids`` (the tokenized text) and a key encoder ``prompt_ids``.

    ``random`` draws from ``range(vocab_size)`` minus ``exclude``; ``shuffled`` permutes the
    natural tokens of each pair with ``seed``.
    """
    if n_tokens < 1:
        raise ValueError(f"n_tokens {n_tokens} out of range: memorize at least 1 token")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    keys = key_texts(key, n_pairs)
    prompts = [list(prompt_ids(k)) for k in keys]
    lengths = sorted({len(p) for p in prompts})
    if len(lengths) > 1 or lengths[0] == 0:
        raise ValueError(f"keys {keys[:3]}... tokenize to {lengths} tokens; all keys need the same non-zero "
                         f"token count (no padding): choose a key whose numbers tokenize per digit")
    need = n_tokens * n_pairs
    generator = torch.Generator().manual_seed(seed)
    if variant == "random":
        if vocab_size is None:
            raise ValueError("variant 'random' needs vocab_size (the model's vocabulary size)")
        allowed = torch.tensor(sorted(set(range(vocab_size)) - set(exclude or ())))  # (V',)
        targets = allowed[torch.randint(len(allowed), (n_pairs, n_tokens), generator=generator)]  # (K, N)
    else:
        if len(ids) < need:
            raise ValueError(f"the text has {len(ids)} tokens, fewer than {n_pairs} x {n_tokens} = {need}; "
                             f"choose fewer tokens or pairs, or a longer text")
        targets = torch.tensor(list(ids[:need]), dtype=torch.long).view(n_pairs, n_tokens)  # (K, N)
        if variant == "shuffled":
            order = torch.stack([torch.randperm(n_tokens, generator=generator) for _ in range(n_pairs)])  # (K, N)
            targets = targets.gather(1, order)  # (K, N)
    return MemorizationTask(torch.tensor(prompts, dtype=torch.long), targets.long(), variant, tuple(keys))


def task_for(tokenizer, text: str, n_tokens: int, variant: str = "natural", n_pairs: int = 1,
             key: str = DEFAULT_KEY, seed: int = 0, vocab_size: int | None = None,
             text_ids: Sequence[int] | None = None) -> MemorizationTask:
    """``build_task`` with a Hugging Face tokenizer; pass ``text_ids`` to reuse a tokenized text.

    >>> task = task_for(hm.tokenizer, load_text("alice"), n_tokens=64)     # doctest: +SKIP
    """
    if text_ids is None:
        text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return build_task(text_ids, lambda k: tokenizer(k)["input_ids"], n_tokens, variant=variant, n_pairs=n_pairs,
                      key=key, seed=seed, vocab_size=vocab_size or len(tokenizer), exclude=special_ids(tokenizer))
