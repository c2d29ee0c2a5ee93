"""Small torch networks trained here on a causal model's task, and interchange on them with plain
forward hooks (they are not Hugging Face models, so they have no workbench sites).

A toy network is ``embed -> layers -> head``; every layer returns ``(B, P, h)``: P positions of
width h. `EqualityMLP` (one position per layer) is the DAS paper's network for hierarchical
equality; `PairNetwork` computes W == X at position 0 and Y == Z at position 1 of its first layer
(so the variables have a known home); `PlantedBits` stores a variable in chosen neurons.

>>> net = EqualityMLP(n_objects=10, seed=0)
>>> tuple(net(torch.zeros(3, 4, dtype=torch.long)).shape)
(3, 2)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .model import CausalModel, Variable

EQUALITY_INPUTS = ("W", "X", "Y", "Z")


class ToyNetwork(nn.Module):
    """Base: ``inputs`` (the causal model's input names, in column order), ``layers``, ``head``."""

    inputs: tuple[str, ...] = ()
    layers: nn.ModuleList

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)  # (B, P, e)
        for layer in self.layers:
            h = layer(h)  # (B, P', h)
        return self.head(h)  # (B, classes)

    def encode(self, rows: Sequence[dict]) -> torch.Tensor:
        """Causal-model inputs -> a (N, len(inputs)) index tensor."""
        return torch.tensor([[int(r[name]) for name in self.inputs] for r in rows], dtype=torch.long)

    @torch.no_grad()
    def states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output on ``x``: a list of (B, P, h)."""
        out, h = [], self.embed(x)
        for layer in self.layers:
            h = layer(h)
            out.append(h)
        return out

    def shape(self) -> list[tuple[int, int]]:
        """(positions, width) of each layer's output."""
        return [(s.shape[1], s.shape[2]) for s in self.states(torch.zeros(1, len(self.inputs), dtype=torch.long))]


class _Dense(nn.Module):
    """Flattens positions, then Linear + ReLU to one position: (B, P, e) -> (B, 1, h)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(self.linear(h.flatten(1))).unsqueeze(1)  # (B, 1, h)


class _Pairs(nn.Module):
    """One shared Linear + ReLU over consecutive input pairs: (B, 4, e) -> (B, 2, h)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * n_in, n_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        pairs = h.reshape(h.shape[0], h.shape[1] // 2, 2 * h.shape[2])  # (B, 2, 2e)
        return F.relu(self.linear(pairs))  # (B, 2, h)


class _EqualityBase(ToyNetwork):
    inputs = EQUALITY_INPUTS

    def __init__(self, n_objects: int, dim: int, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        # fixed random object vectors (the DAS paper's inputs); only the layers learn
        self.register_buffer("objects", torch.randn(n_objects, dim, generator=generator))  # (n, e)

    def embed(self, x):
        return self.objects[x]  # (B, 4, e)


class EqualityMLP(_EqualityBase):
    """The DAS paper's MLP: 4 object vectors concatenated, ``depth`` dense ReLU layers of ``hidden``."""

    def __init__(self, n_objects: int = 100, dim: int = 4, hidden: int = 16, depth: int = 3, seed: int = 0) -> None:
        super().__init__(n_objects, dim, seed)
        torch.manual_seed(seed)
        widths = [4 * dim] + [hidden] * depth
        self.layers = nn.ModuleList(_Dense(a, b) for a, b in zip(widths, widths[1:]))
        self.out = nn.Linear(hidden, 2)

    def head(self, h):
        return self.out(h.flatten(1))  # (B, 2)


class PairNetwork(_EqualityBase):
    """Layer 0 sees (W, X) at position 0 and (Y, Z) at position 1 (shared weights); then dense layers."""

    def __init__(self, n_objects: int = 100, dim: int = 4, hidden: int = 16, seed: int = 0) -> None:
        super().__init__(n_objects, dim, seed)
        torch.manual_seed(seed)
        self.layers = nn.ModuleList([_Pairs(dim, hidden), _Dense(2 * hidden, hidden)])
        self.out = nn.Linear(hidden, 2)

    def head(self, h):
        return self.out(h.flatten(1))  # (B, 2)


def train_toy(net: ToyNetwork, model: CausalModel, steps: int = 1500, batch_size: int = 256, lr: float = 3e-3,
              seed: int = 0, output: str | None = None, pool: int = 20_000) -> float:
    """Fit ``net`` to ``model``'s output (Adam) on a ``pool`` of sampled inputs (the causal model
    runs in Python: a fixed pool is faster than fresh draws); returns accuracy on 2,000 held-out ones.

    >>> from causal.tasks import hierarchical_equality                    # doctest: +SKIP
    >>> train_toy(EqualityMLP(), hierarchical_equality())                  # doctest: +SKIP
    0.999
    """
    output = output or model.output
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    drawn = model.sample_inputs(min(steps * batch_size, pool) + 2000, seed=seed)
    x_all = net.encode(drawn)  # (N, inputs)
    y_all = torch.tensor([int(model.run(r)[output]) for r in drawn])  # (N,)
    x_test, y_test = x_all[-2000:], y_all[-2000:]
    x_train, y_train = x_all[:-2000], y_all[:-2000]
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(steps):
        index = torch.randint(len(x_train), (batch_size,), generator=generator)
        loss = F.cross_entropy(net(x_train[index]), y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        return float((net(x_test).argmax(-1) == y_test).float().mean())


@contextmanager
def interchange(net: ToyNetwork, layer: int, positions: Sequence[int], intervention: nn.Module,
                source_states: torch.Tensor) -> Iterator[None]:
    """Inside the block, ``net``'s layer output at ``positions`` becomes
    ``intervention(base, source)``, with ``source_states`` (B, k, h) read from the source run.

    A plain ``register_forward_hook``, removed on exit (also on exceptions).
    """
    index = torch.as_tensor(list(positions), dtype=torch.long)

    def hook(_module, _args, output):
        out = output.clone()
        out[:, index] = intervention(output[:, index], source_states)  # (B, k, h)
        return out

    handle = net.layers[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class PlantedBits(ToyNetwork):
    """A hand-built network storing ``a`` (0-7) in the bits of neurons ``planted`` and ``b`` in
    ``other``; the remaining neurons hold noise the head ignores. The head scores each class
    ``8 a + b`` by ``-||h[planted + other] - code||²``: interchanging exactly ``planted`` moves the
    answer to the source's ``a``.

    >>> net = PlantedBits()
    >>> net(net.encode([{"a": 5, "b": 2}])).argmax(-1).item()
    42
    """

    inputs = ("a", "b")

    def __init__(self, d: int = 12, planted: Sequence[int] = (2, 5, 9), other: Sequence[int] = (0, 7, 10),
                 seed: int = 0) -> None:
        super().__init__()
        if len(planted) != 3 or len(other) != 3 or set(planted) & set(other) or max(*planted, *other) >= d:
            raise ValueError(f"planted {planted} and other {other}: three distinct neurons each, all below d = {d}")
        self.planted, self.other, self.d = list(planted), list(other), d
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("noise", torch.randn(64, d, generator=generator))  # (classes, d)
        bits = torch.tensor([[(v >> i) & 1 for i in range(3)] for v in range(8)], dtype=torch.float32) * 2 - 1  # (8, 3)
        codes = torch.cat([bits.repeat_interleave(8, 0), bits.repeat(8, 1)], dim=1)  # (64, 6): a bits, b bits
        self.register_buffer("codes", codes)
        self.layers = nn.ModuleList([nn.Identity()])

    def embed(self, x):
        cls = x[:, 0] * 8 + x[:, 1]  # (B,)
        h = self.noise[cls].clone()  # (B, d)
        h[:, self.planted + self.other] = self.codes[cls]  # (B, 6)
        return h.unsqueeze(1)  # (B, 1, d)

    def head(self, h):
        read = h[:, 0, self.planted + self.other]  # (B, 6)
        return -((read.unsqueeze(1) - self.codes) ** 2).sum(-1)  # (B, 64)


def planted_bits_model() -> CausalModel:
    """The causal model `PlantedBits` implements: ``A = a``; ``out = 8 A + b``."""
    values = tuple(range(8))
    return CausalModel([Variable("a", values), Variable("b", values), Variable("A", values, ("a",), lambda a: a),
                        Variable("out", tuple(range(64)), ("A", "b"), lambda a, b: 8 * a + b)], name="planted_bits")


__all__ = ["EQUALITY_INPUTS", "EqualityMLP", "PairNetwork", "PlantedBits", "ToyNetwork", "interchange",
           "planted_bits_model", "train_toy"]
