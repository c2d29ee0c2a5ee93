"""Models no local machine holds: a weightless HookedModel whose plans run on NDIF.

nnsight builds the model's module tree on the meta device from its Hugging Face config (no
weights are downloaded); the workbench resolves sites, positions and sizes on that tree, and
``backend="nnsight", remote=True`` sends each trace to NDIF, where the real model runs it.
Set-up (the ``NDIF_API_KEY`` environment variable) and the hosted models: docs/remote.md.

>>> hm = remote_model("meta-llama/Llama-3.1-70B")                          # doctest: +SKIP
>>> hm.run("Paris is in", [PlanItem("L40.resid_post", "l1", ZeroAblation())],
...        backend="nnsight", remote=True)                                 # doctest: +SKIP
"""

from __future__ import annotations

from ..hooked import HookedModel


def remote_model(repo_id: str, revision: str | None = None, tokenizer=None) -> HookedModel:
    """A HookedModel over nnsight's meta-device copy of ``repo_id`` (a hub id NDIF hosts, or a
    local folder), carrying the nnsight wrapper that the nnsight backend traces through.
    ``tokenizer`` replaces the one loaded with the model (e.g. one the pipeline cannot infer).

    Its ``device`` is the CPU (where inputs are prepared); running it with the hooks backend,
    or with ``remote=False``, loads the weights locally (nnsight dispatches on first use).
    """
    from nnsight.modeling.transformers import TransformersModel

    kwargs = {} if revision is None else {"revision": revision}
    if tokenizer is not None:
        kwargs["tokenizer"] = tokenizer
    wrapped = TransformersModel(repo_id, task="text-generation", **kwargs)  # not dispatched: meta weights
    hm = HookedModel(wrapped._module, wrapped.tokenizer, name=repo_id)
    hm.__dict__["_nnsight"] = wrapped
    return hm


__all__ = ["remote_model"]
