"""Shared pieces of benchmarks/gpu_suite.py: models, a word tokenizer, timing, the hand-written LoReFT.

Everything here imports only what the GPU machine has (torch, transformers, tokenizers, safetensors).
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import orthogonal

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
WORDS = ("<pad> <unk> <eos> the a movie was is in of country city Paris Rome France Italy good bad "
         "great awful I thought it loved hated , . ! ? and cat dog sat on mat capital").split()


@dataclass(frozen=True)
class LlamaShape:
    """A random-init Llama: the big timing model, the correctness model, or their --tiny versions."""

    d: int
    layers: int
    vocab: int
    heads: int
    kv_heads: int
    intermediate: int

    def describe(self) -> dict:
        return {"hidden": self.d, "layers": self.layers, "vocab": self.vocab, "heads": self.heads,
                "kv_heads": self.kv_heads, "intermediate": self.intermediate}


# d=2048, 16 layers, vocab 32k as in the peers README's GPU reference; MLP width and heads as TinyLlama's
# (5632, 32 query heads of 64), but full multi-head attention (the README does not name them).
BIG = LlamaShape(d=2048, layers=16, vocab=32000, heads=32, kv_heads=32, intermediate=5632)
BIG_TINY = LlamaShape(d=64, layers=4, vocab=512, heads=4, kv_heads=4, intermediate=128)
CHECK = LlamaShape(d=512, layers=4, vocab=4096, heads=8, kv_heads=4, intermediate=1024)
CHECK_TINY = LlamaShape(d=64, layers=2, vocab=512, heads=4, kv_heads=2, intermediate=128)


def random_llama(shape: LlamaShape, dtype: torch.dtype, device: torch.device, seed: int = 0) -> nn.Module:
    """A frozen-ready random Llama in eval mode (sdpa attention), built directly on ``device``."""
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.d, intermediate_size=shape.intermediate,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, max_position_embeddings=1024,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = None  # generate exactly max_new_tokens (no early stop)
    return model.to(dtype).eval()


def word_tokenizer():
    """A word-level tokenizer over WORDS (tokenizers library; no files, no hub) for random models."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


def load_smollm2(folder: str | None, gguf: str | None):
    """(model fp32, tokenizer) from a Hugging Face folder or a GGUF file (dequantized on load)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if gguf:
        path = Path(gguf)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.eval(), tokenizer


def lm_batch(vocab: int, batch: int, seq: int, device: torch.device, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random ids (B, T), all-ones mask, labels on the second half (the first half is the prompt)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, seq), generator=gen)  # (B, T)
    labels = ids.clone()
    labels[:, :seq // 2] = -100
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": labels.to(device), "prompt_lengths": torch.full((batch,), seq // 2, device=device)}


# ---- timing -------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(methods: dict[str, Callable[[], object]], device: torch.device, warmup: int, reps: int,
                deadline: float) -> tuple[dict[str, list[float]], bool]:
    """Seconds per call of each method, run A B C A B C ... after ``warmup`` rounds; stops early
    (after at least 3 rounds) once ``time.monotonic()`` passes ``deadline``. Returns (times, truncated)."""
    for _ in range(warmup):
        for fn in methods.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for rep in range(reps):
        if rep >= 3 and time.monotonic() > deadline:
            return times, True
        for name, fn in methods.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times, False


def medians_ms(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: round(1000 * statistics.median(t), 3) for name, t in times.items() if t}


# ---- the independent reference: LoReFT by hand -------------------------------------------------
class HandLoReFT(nn.Module):
    """``h + Rᵀ(W h + b − R h)``; R (r, d) from torch's Householder orthogonal parametrization, fp32."""

    def __init__(self, d: int, r: int, device: torch.device) -> None:
        super().__init__()
        self.R = orthogonal(nn.Linear(d, r, bias=False, device=device), orthogonal_map="householder")
        self.W = nn.Linear(d, r, device=device)  # W (r, d), b (r,)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # h (B, k, d) in the model's dtype
        R = self.R.weight.to(h.dtype)  # (r, d)
        coef = F.linear(h, self.W.weight.to(h.dtype), self.W.bias.to(h.dtype)) - h @ R.T  # (B, k, r)
        return h + coef @ R  # (B, k, d)


class HandHooks(nn.Module):
    """register_forward_hook LoReFT on decoder layers: per layer one HandLoReFT per position group
    (``groups``: index tensors (k_g,), the same for every example), edited in place."""

    def __init__(self, model: nn.Module, layers: tuple[int, ...], groups: list[torch.Tensor], rank: int) -> None:
        super().__init__()
        self.blocks = [model.model.layers[i] for i in layers]  # not submodules: the model is not ours
        device = next(model.parameters()).device
        d = model.config.hidden_size
        self.groups = [g.to(device) for g in groups]
        self.edits = nn.ModuleList(nn.ModuleList(HandLoReFT(d, rank, device) for _ in groups) for _ in layers)

    def _hook(self, i: int):
        def hook(_module, _args, output):
            h = output[0] if isinstance(output, tuple) else output  # (B, T, d)
            for edit, index in zip(self.edits[i], self.groups):
                h[:, index] = edit(h[:, index])  # (B, k_g, d)
        return hook

    @contextmanager
    def installed(self) -> Iterator[None]:
        handles = [block.register_forward_hook(self._hook(i)) for i, block in enumerate(self.blocks)]
        try:
            with parametrize.cached():  # R evaluated once per step, as the workbench does
                yield
        finally:
            for handle in handles:
                handle.remove()


def first_last_groups(prompt_length: int, first: int, last: int, tied: bool) -> list[torch.Tensor]:
    """Position groups for f<first>+l<last> on equal-length prompts: one (tied) or two (untied)."""
    f = torch.arange(first)
    lst = torch.arange(prompt_length - last, prompt_length)
    return [torch.cat([f, lst])] if tied else [g for g in (f, lst) if len(g)]
