"""Next-token cross-entropy fused with a frozen LM head: the (N, V) logits never outlive one chunk.

Training an intervention with labels on every token spends most of a step in the LM head and the
loss over the vocabulary: the plain path keeps the logits, the log-softmax output and its gradient,
three (N, V) fp32 tensors, and walks them three times. The head is frozen, so the only gradient
the loss needs is d loss / d hidden, (N, d). ``linear_cross_entropy`` computes it in the forward,
chunk by chunk (softmax minus one-hot, times the head's weight), keeps only that (N, d) tensor for
the backward, and so saves one pass over the logits and almost all of their memory.

``head_inputs`` captures what a Hugging Face causal LM feeds its head, so that the model's own
forward (position ids, device maps, hooks) runs unchanged and only the head's matmul moves here.
It applies to models whose logits are the head's output and nothing more (``PLAIN_HEADS``); heads
with soft-capping or logit scaling (Gemma 2/3, Cohere, Granite) keep the plain path.

>>> h, w = torch.randn(5, 8, requires_grad=True), torch.randn(11, 8)
>>> t = torch.tensor([1, 2, 3, 4, 5])
>>> fused = linear_cross_entropy(h, w, None, t)
>>> bool(torch.allclose(fused, torch.nn.functional.cross_entropy(h @ w.T, t)))
True
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

# model_type values whose CausalLM forward returns ``lm_head(hidden)`` unchanged (checked against
# transformers 5.x sources; Gemma 2/3 soft-cap, Cohere and Granite scale, so they are absent).
PLAIN_HEADS = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gpt2", "gpt_neox", "phi3",
                         "olmo", "olmo2", "smollm3", "starcoder2"})
CHUNK_BYTES = 64 << 20  # fp32 logits per chunk: small next to the activations, large enough for a fast matmul


def loss_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a loss over logits of ``dtype`` is computed in: fp32 for half precision, else itself.

    >>> loss_dtype(torch.bfloat16), loss_dtype(torch.float64)
    (torch.float32, torch.float64)
    """
    return torch.promote_types(dtype, torch.float32)


class _LinearCrossEntropy(torch.autograd.Function):
    """loss = sum_i CE(hidden_i @ weightᵀ + bias, target_i) * scale; the weight gets no gradient."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, scale, rows: int):
        need_grad = ctx.needs_input_grad[0]
        acc = loss_dtype(weight.dtype)
        total = torch.zeros((), dtype=acc, device=hidden.device)
        grad = torch.empty_like(hidden) if need_grad else None  # (N, d): the only tensor kept for backward
        for start in range(0, hidden.shape[0], rows):
            chunk = slice(start, start + rows)
            logits = nn.functional.linear(hidden[chunk], weight, bias).to(acc)  # (c, V), as the plain path upcasts
            target = targets[chunk]
            lse = torch.logsumexp(logits, dim=-1)  # (c,)
            total += (lse - logits.gather(1, target[:, None]).squeeze(1)).sum()
            if need_grad:
                probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place
                probs[torch.arange(probs.shape[0], device=probs.device), target] -= 1.0
                grad[chunk] = (probs.mul_(scale).to(weight.dtype) @ weight).to(hidden.dtype)
        ctx.save_for_backward(grad)
        return total * scale

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad * grad_out.to(grad.dtype), None, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor, divisor: float | torch.Tensor | None = None,
                         chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """Cross-entropy of ``hidden`` (N, d) through a frozen head ``weight`` (V, d) (+ ``bias`` (V,))
    against ``targets`` (N,): the mean over the N rows, or the sum over ``divisor`` when given.

    Equals ``cross_entropy((hidden @ weight.T + bias).float(), targets)`` and its gradient with
    respect to ``hidden`` to float rounding; ``weight`` and ``bias`` must not require grad.

    >>> h = torch.randn(3, 4, requires_grad=True)
    >>> linear_cross_entropy(h, torch.randn(6, 4), None, torch.tensor([0, 5, 2])).backward()
    >>> h.grad.shape
    torch.Size([3, 4])
    """
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        raise ValueError("linear_cross_entropy trains no head: the head's weight and bias must have "
                         "requires_grad=False (freeze them, or compute the logits and use cross_entropy)")
    if hidden.ndim != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(f"hidden must be (N, d) and targets (N,), got {tuple(hidden.shape)} and {tuple(targets.shape)}")
    if hidden.shape[0] == 0:
        raise ValueError("linear_cross_entropy got no rows (N = 0): give at least one labelled token")
    if divisor is None:
        scale = 1.0 / hidden.shape[0]
    elif isinstance(divisor, torch.Tensor):  # HF Trainer's count over ranks: stays on the device (no sync)
        scale = 1.0 / divisor.to(device=weight.device, dtype=loss_dtype(weight.dtype))
    else:
        scale = 1.0 / float(divisor)
    rows = max(1, chunk_bytes // (4 * weight.shape[0]))
    hidden = hidden.to(weight.device)
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets.to(weight.device), scale, rows)


def fusable_head(model: nn.Module) -> nn.Linear | None:
    """The frozen ``nn.Linear`` head of ``model`` when its logits are that head's output alone
    (``PLAIN_HEADS``) and its weight is a plain tensor (not sharded, not offloaded), else None.

    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> m = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16)).requires_grad_(False)
    >>> fusable_head(m) is m.lm_head
    True
    """
    config = getattr(model, "config", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if getattr(config, "model_type", None) not in PLAIN_HEADS or type(head) is not nn.Linear:
        return None
    params = [head.weight] + ([head.bias] if head.bias is not None else [])
    if not all(_frozen_plain(p) for p in params):
        return None  # trained, sharded (DTensor) or offloaded heads keep the plain path
    return head


def _frozen_plain(p: torch.Tensor) -> bool:
    return not p.requires_grad and p.device.type != "meta" and type(p.data) is torch.Tensor


@contextmanager
def head_inputs(head: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Inside the block, ``head`` records its input and computes on none of its rows: the model's
    forward returns empty logits and the list holds the (…, d) hidden states the head was given.

    >>> with head_inputs(model.lm_head) as seen:                              # doctest: +SKIP
    ...     model(**batch, logits_to_keep=keep)
    >>> hidden = seen[0]                     # (N, d)                         # doctest: +SKIP
    """
    seen: list[torch.Tensor] = []

    def capture(_module, args):
        seen.append(args[0])
        return (args[0][..., :0, :],)  # zero rows: the head's matmul costs nothing

    handle = head.register_forward_pre_hook(capture)
    try:
        yield seen
    finally:
        handle.remove()
