"""ReftConfig: which layers, component, positions, rank and kind of intervention to train.

The config names everything needed to rebuild a ReFT model from JSON; checks that need the model
(layer range, rank vs hidden size) run in ``get_reft_model``.

>>> cfg = ReftConfig(layers=(4, 8), rank=4, positions="f1+l1")
>>> cfg.position_groups()
(1, 1)
>>> ReftConfig.from_dict(cfg.to_dict()) == cfg
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from workbench.positions import FirstLast, parse_positions
from workbench.sites import COMPONENTS, Site

from .interventions import ACTIVATIONS, KINDS


@dataclass(frozen=True)
class ReftConfig:
    """What to train. Positions count tokens of the *prompt* (``f7+l7``: its first and last 7)."""

    layers: tuple[int, ...]          # blocks to intervene on (0-based)
    rank: int = 4                    # r: dimension of the edited subspace
    kind: str = "loreft"             # loreft | direft | consreft
    component: str = "resid_post"    # site component: the block output, as in the ReFT paper
    positions: str = "l1"            # prompt positions: 'l1', 'f1+l1', 'f7+l7', ...
    tied: bool = False               # one intervention for first and last positions (pyreft share_weights)
    dropout: float = 0.0             # on the rank-r edit coefficients
    activation: str = "linear"       # on W h + b (LoReFT, DiReFT)

    def __post_init__(self) -> None:
        layers = (self.layers,) if isinstance(self.layers, int) else tuple(int(x) for x in self.layers)
        object.__setattr__(self, "layers", layers)
        if not layers:
            raise ValueError("layers is empty: name at least one layer, e.g. layers=(4,)")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers {layers} repeat a layer; list each layer once")
        if self.kind not in KINDS:
            raise ValueError(f"unknown intervention kind {self.kind!r}; expected one of {sorted(KINDS)}")
        if self.component not in COMPONENTS or self.component == "z":
            valid = sorted(c for c in COMPONENTS if c != "z")
            raise ValueError(f"unknown component {self.component!r} for ReFT; expected one of {valid}")
        if self.rank < 1:
            raise ValueError(f"rank {self.rank} out of range: it must be at least 1; e.g. rank=4")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; expected one of {sorted(ACTIVATIONS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout {self.dropout} out of range: expected 0 <= dropout < 1; e.g. dropout=0.05")
        self.selector()  # validates the position spec

    def selector(self) -> FirstLast:
        """The position spec as a FirstLast selector; errors for anything else or for no tokens."""
        try:
            sel = parse_positions(self.positions)
        except ValueError as error:
            raise ValueError(f"positions {self.positions!r}: {error}") from None
        if not isinstance(sel, FirstLast):
            raise ValueError(f"positions {self.positions!r}: ReFT takes first/last prompt tokens, "
                             f"e.g. 'l1', 'f1+l1', 'f7+l7'")
        if sel.first + sel.last == 0:
            raise ValueError(f"positions {self.positions!r} select no tokens; use e.g. 'l1' or 'f1+l1'")
        return sel

    def position_groups(self) -> tuple[int, ...]:
        """Slot counts per separately-parametrized group: one group when tied, else first / last."""
        sel = self.selector()
        if self.tied:
            return (sel.first + sel.last,)
        return tuple(n for n in (sel.first, sel.last) if n > 0)

    def sites(self) -> list[Site]:
        return [Site(layer, self.component) for layer in self.layers]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["layers"] = list(self.layers)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ReftConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ReftConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**{**data, "layers": tuple(data["layers"])})
