"""Generation with ReFT interventions on the prompt positions, during the prefill only.

This is the ReFT paper's mode: the prompt's first/last tokens are edited once, in the prefill, and
every new token attends to the edited keys and values through the KV cache. Prompts are formatted
as in training (chat template for instruct models), left-padded and generated as one batch.

>>> generate(reft, ["Who are you?", "Name a fruit."], max_new_tokens=16)     # doctest: +SKIP
['Ahoy! I be Captain Byte ...', ...]
"""

from __future__ import annotations

from typing import Sequence

import torch

from workbench import orthogonal
from workbench.padding import left_pad, pad_id_of

from .data import encode_prompt, format_prompt, has_chat_template


def prompt_batch(tokenizer, prompts: Sequence[str], chat_template: bool | None = None,
                 system_prompt: str | None = None) -> dict[str, torch.Tensor]:
    """Format and left-pad prompts exactly as ``tokenize_pairs`` formats them for training."""
    use_chat = has_chat_template(tokenizer) if chat_template is None else chat_template
    seqs = [encode_prompt(tokenizer, format_prompt(tokenizer, p, use_chat, system_prompt), use_chat)
            for p in prompts]
    return left_pad(seqs, pad_id_of(tokenizer))


@torch.no_grad()
def generate_ids(reft, batch: dict[str, torch.Tensor], max_new_tokens: int = 32, do_sample: bool = False,
                 intervene: bool = True, progress: bool = False) -> torch.Tensor:
    """New token ids (B, new) for a left-padded batch; ``intervene=False`` gives the base model's;
    ``progress`` shows a bar over the new tokens.

    >>> generate_ids(reft, {"input_ids": ids, "attention_mask": mask}, 8)  # doctest: +SKIP
    """
    plan = reft.plan() if intervene else []
    eos = reft.tokenizer.eos_token_id if reft.tokenizer is not None else None
    was_training = reft.training
    reft.eval()  # no dropout while generating
    try:
        with orthogonal.cached():
            out = reft.hm.generate(batch, plan, mode="prompt", max_new_tokens=max_new_tokens,
                                   do_sample=do_sample, eos_token_id=eos, progress=progress)
    finally:
        reft.train(was_training)
    return out["ids"]  # (B, new)


def generate(reft, prompts: str | Sequence[str], max_new_tokens: int = 32, chat_template: bool | None = None,
             system_prompt: str | None = None, do_sample: bool = False, intervene: bool = True,
             progress: bool = False) -> list[str]:
    """Responses to ``prompts`` (greedy unless ``do_sample``), cut at the first EOS.

    >>> generate(reft, "Who are you?", max_new_tokens=12)                      # doctest: +SKIP
    ['Ahoy! I be Captain Byte, a pirate robot. Arr!']
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("no prompts given: pass at least one string")
    tok = reft.tokenizer
    if tok is None:
        raise ValueError("this model has no tokenizer: use generate_ids with token ids")
    batch = prompt_batch(tok, prompts, chat_template, system_prompt)
    new = generate_ids(reft, batch, max_new_tokens, do_sample=do_sample, intervene=intervene,
                       progress=progress)  # (B, new)
    texts = []
    for row in new.tolist():
        if tok.eos_token_id in row:
            row = row[:row.index(tok.eos_token_id)]
        texts.append(tok.decode(row, skip_special_tokens=True).strip())
    return texts
