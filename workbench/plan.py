"""An intervention plan: a list of (site, positions, intervention, source positions) items.

>>> item = PlanItem("L3.resid_post", "l1", Patch())
>>> str(item.site), item.positions
('L3.resid_post', FirstLast(first=0, last=1))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .interventions import Intervention, Patch  # noqa: F401  (Patch: used in the doctest)
from .positions import PositionSelector, parse_positions
from .sites import Site


@dataclass
class PlanItem:
    """One intervention at one site.

    ``positions`` chooses base tokens; ``source_positions`` the source tokens read for them (the
    same spec when None). ``source`` indexes the ``sources`` list given to the run.
    ``source_values`` (B, k, d) gives precomputed source states instead of a source run, e.g.
    activations cached once for many training epochs.
    """

    site: Site | str
    positions: PositionSelector | str | int | list = "all"
    intervention: Intervention = field(default_factory=Patch)
    source_positions: PositionSelector | str | int | list | None = None
    source: int = 0
    source_values: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.site = Site.parse(self.site)
        self.positions = parse_positions(self.positions)
        if self.source_positions is not None:
            self.source_positions = parse_positions(self.source_positions)
        if not isinstance(self.intervention, Intervention):
            raise TypeError(
                f"plan item at {self.site}: intervention must be a workbench Intervention, got "
                f"{type(self.intervention).__name__}; wrap your module as a subclass of "
                f"workbench.interventions.Intervention, or use e.g. Patch(), AddVector(v)"
            )

    @property
    def reads_source_run(self) -> bool:
        return self.intervention.needs_source and self.source_values is None


Plan = list[PlanItem]
