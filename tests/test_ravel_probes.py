"""Featurizers and the RAVEL comparison: planted directions are found; the table is well formed."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from probes.featurizers import mean_difference_basis, pca_basis, probe_basis
from probes.ravel import METHODS, REFERENCE, RavelConfig, compare_methods, ravel_figure
from test_das_training import CLASSES, ENTITIES, planted_model, planted_pairs
from workbench.das import TrainConfig
from workbench.data import RavelData, RavelSetup


def _labelled(n=300, d=10, seed=0):
    """Classes differ only along e0 and e1; the other coordinates are larger noise."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    X = 2.0 * torch.randn(n, d, generator=gen)
    X[:, 0], X[:, 1] = 3.0 * (y == 1) + 0.1 * torch.randn(n, generator=gen), 3.0 * (y == 2)
    return X, y.tolist()


def _captured(basis, dims=(0, 1)):
    """Share of the planted plane (e0, e1) inside span(basis)."""
    return float(basis[:, list(dims)].pow(2).sum()) / len(dims)


def test_supervised_featurizers_find_the_class_plane():
    X, y = _labelled()
    for basis in (mean_difference_basis(X, y, 2), probe_basis(X, y, 2)):
        assert basis.shape == (2, 10)
        assert torch.allclose(basis @ basis.T, torch.eye(2), atol=1e-5)
        assert _captured(basis) > 0.9
    assert mean_difference_basis(X, y, 8).shape == (2, 10)  # 3 classes: at most 2 directions


def test_pca_finds_the_high_variance_plane_not_the_labels():
    X, y = _labelled()
    X[:, 5] *= 10.0  # one loud unlabelled direction dominates the variance
    assert float(pca_basis(X, 1)[0, 5].abs()) > 0.99
    assert _captured(pca_basis(X, 1)) < 0.05


def test_featurizer_errors():
    X, y = _labelled()
    with pytest.raises(ValueError, match="k = 0 out of range"):
        pca_basis(X, 0)
    with pytest.raises(ValueError, match="299 labels for 300"):
        probe_basis(X, y[:-1], 2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        mean_difference_basis(X, [0] * 300, 2)


def _planted_setup() -> tuple:
    """A RavelSetup over the planted model: attribute V of entity t is t mod CLASSES."""
    hm, inside = planted_model()
    data = RavelData("planted", {str(t): {"V": str(t % CLASSES)} for t in ENTITIES}, {"V": ["%s"]},
                     {str(t): "train" for t in ENTITIES}, {"%s": "train"})
    kept = pd.DataFrame({"entity": [str(t) for t in ENTITIES], "template": "%s", "attribute": "V",
                         "ids": [[7, t] for t in ENTITIES], "position": 1})
    def split(seed, n):  # isolate stand-in: the base's own answer is the label
        cause = planted_pairs(n, seed)
        isolate = planted_pairs(n, seed + 100)
        isolate.labels = torch.tensor([ids[-1] % CLASSES for ids in isolate.base_ids])
        return {"V": {"cause": cause, "isolate": isolate}}
    examples = {"train": split(1, 192), "val": split(2, 48), "test": split(3, 64)}
    return hm, RavelSetup({"train": kept}, pd.DataFrame(), examples, data)


def test_compare_methods_on_planted_model():
    hm, setup = _planted_setup()
    config = RavelConfig(attributes=("V",), site="L1.resid_post", k=2, batch_size=64, progress=False,
                         train=TrainConfig(epochs=6, batch_size=32, lr=2e-2, progress=False))
    table = compare_methods(hm, setup, config)
    assert list(table.method.unique()) == list(METHODS) + [REFERENCE]
    assert set(table.attribute) == {"V", "mean"}
    assert ((table.disentangle - (table.cause + table.isolate) / 2).abs() < 1e-12).all()
    per = table[table.attribute == "V"].set_index("method")
    # the planted plane carries the class means, the probe's weights and the top variance: all find it
    for method in ("pca", "probe", "mean_diff", "das"):
        assert per.loc[method, "cause"] >= 0.9, (method, per.loc[method].to_dict())
    assert per.loc[REFERENCE, "cause"] == 1.0 and per.loc[REFERENCE, "isolate"] == 0.0
    assert per.loc["probe", "k_used"] == 2 and per.loc[REFERENCE, "k_used"] == 32
    # MDAS must also keep the base's answer on the isolate stand-ins, which contradict Cause here:
    # it cannot exceed DAS on Cause
    assert per.loc["mdas", "cause"] <= per.loc["das", "cause"] + 1e-9
    assert (table.seconds >= table.fit_seconds).all()
    figure = ravel_figure(table)
    assert [trace.name for trace in figure.data] == ["Cause", "Isolate", "Disentangle"]
