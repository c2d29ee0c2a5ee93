"""Sites: *where* in the model an intervention acts.

A site is a layer, a component and (for per-head components) a head. It prints and parses as a
short string so that the CLI, JSON files and the app can name it:

>>> Site.parse("L3.resid_post")
Site(layer=3, component='resid_post', head=None)
>>> str(Site(5, "z", head=2))
'L5.head2.z'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# What each component means, in words; the adapters map them to modules per architecture.
COMPONENTS: dict[str, str] = {
    "resid_pre": "residual stream entering the block (the block's input)",
    "resid_post": "residual stream leaving the block (the block's output)",
    "attn_out": "what the attention sub-block adds to the residual stream",
    "mlp_out": "what the MLP sub-block adds to the residual stream",
    "mlp_act": "MLP hidden activations (neurons): the input of the MLP's output projection",
    "z": "attention heads' outputs before the output projection (per head with head=h)",
}

_SITE_RE = re.compile(r"^L(?P<layer>-?\d+)\.(?:head(?P<head>\d+)\.)?(?P<component>[a-z_]+)$")


@dataclass(frozen=True)
class Site:
    """A place in the model: ``layer`` (0-based), ``component`` (see COMPONENTS), optional ``head``.

    >>> Site(0, "mlp_act")
    Site(layer=0, component='mlp_act', head=None)
    """

    layer: int
    component: str
    head: int | None = None

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise ValueError(
                f"unknown component {self.component!r}; expected one of {sorted(COMPONENTS)} "
                f"(e.g. Site(3, 'resid_post') or 'L3.resid_post')"
            )
        if self.head is not None and self.component != "z":
            raise ValueError(
                f"site L{self.layer}.{self.component}: a head can only be given for component 'z' "
                f"(per-head attention output), got head={self.head}; use Site({self.layer}, 'z', head={self.head}) or drop the head"
            )
        if self.head is not None and self.head < 0:
            raise ValueError(f"site {self}: head must be >= 0, got {self.head}; use a head index such as 0")

    def __str__(self) -> str:
        head = f"head{self.head}." if self.head is not None else ""
        return f"L{self.layer}.{head}{self.component}"

    @classmethod
    def parse(cls, text: "str | Site") -> "Site":
        """Parse ``'L3.resid_post'`` or ``'L5.head2.z'`` into a Site (a Site passes through).

        >>> Site.parse("L5.head2.z").head
        2
        """
        if isinstance(text, Site):
            return text
        match = _SITE_RE.match(text.strip())
        if match is None:
            raise ValueError(
                f"cannot parse site {text!r}: expected 'L<layer>.<component>' or "
                f"'L<layer>.head<h>.z', e.g. 'L3.resid_post'; components: {sorted(COMPONENTS)}"
            )
        head = match.group("head")
        return cls(int(match.group("layer")), match.group("component"), int(head) if head else None)
