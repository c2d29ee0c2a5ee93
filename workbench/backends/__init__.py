"""Execution backends for intervention plans: where and how a plan runs.

``hooks`` (the default) installs PyTorch forward hooks on the local model
(`HookedModel.intervene`). ``nnsight`` runs the same plan inside nnsight traces, which can also
execute on NDIF (``remote=True``) for models no local machine holds; see docs/remote.md.

>>> check_backend("hooks", remote=False)
'hooks'
>>> check_backend("pyvene", remote=False)
Traceback (most recent call last):
...
ValueError: backend 'pyvene': expected one of ('hooks', 'nnsight'); use backend='hooks' (local forward hooks, the default) or backend='nnsight' (nnsight traces, also remote on NDIF)
"""

from __future__ import annotations

BACKENDS = ("hooks", "nnsight")


REMOTE_VALUES = (False, True, "local")  # "local": nnsight's offline rehearsal of a remote request


def check_backend(backend: str, remote: bool | str) -> str:
    """``backend`` if it is a known one and can honour ``remote``; a clear error otherwise."""
    if not any(remote is value or (isinstance(remote, str) and remote == value) for value in REMOTE_VALUES):
        raise ValueError(f"remote={remote!r}: expected one of {REMOTE_VALUES}; use remote=True (run on NDIF), "
                         f"remote='local' (serialize as for NDIF, run here) or remote=False")
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: expected one of {BACKENDS}; use backend='hooks' (local forward "
                         f"hooks, the default) or backend='nnsight' (nnsight traces, also remote on NDIF)")
    if remote and backend != "nnsight":
        raise ValueError(f"remote=True runs through nnsight on NDIF, but backend={backend!r}; pass "
                         f"backend='nnsight' with remote=True, or remote=False to run locally")
    return backend


__all__ = ["BACKENDS", "REMOTE_VALUES", "check_backend"]
