"""Direction fitting: planted directions recovered, orientation, errors, cosines, 1-D DAS."""

from __future__ import annotations

import pytest
import torch
from test_sentiment_planted import ADJECTIVES, VERBS, planted_model

from workbench.data.reviews import contrast_pairs, toy_movie_reviews
from probes.direction_das import counterfactual_pairs, das_direction
from probes.directions import (Direction, cosine_matrix, fit_directions, kmeans_direction, logistic_probe,
                               mean_difference, pca_direction)
from workbench.das import TrainConfig


def planted_data(n: int = 200, d: int = 64, signal: float = 3.0, noise: float = 0.5, seed: int = 0):
    """X (n, d) = noise + y * signal * u (+ a shared offset), y in {+1, -1}; returns X, y, u."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g)
    u = u / u.norm()
    y = torch.where(torch.rand(n, generator=g) < 0.5, 1, -1)
    X = noise * torch.randn(n, d, generator=g) + signal * y[:, None] * u + 2.0 * torch.randn(d, generator=g)
    return X, y, u


@pytest.mark.parametrize("fit", [mean_difference, logistic_probe, pca_direction, kmeans_direction])
def test_planted_direction_recovered_and_oriented(fit):
    X, y, u = planted_data()
    v = fit(X, y)
    assert v.shape == u.shape and float(v.norm()) == pytest.approx(1.0, abs=1e-5)
    assert float(v @ u) > 0.99  # the sign too: the positive class projects higher


def test_a_weak_direction_is_still_found_by_supervised_methods_only():
    X, y, u = planted_data(n=400, signal=0.6, noise=1.0)
    X[:, :4] += 4.0 * torch.randn(400, 4, generator=torch.Generator().manual_seed(3))  # big unrelated variance
    assert float(mean_difference(X, y) @ u) > 0.8
    assert float(pca_direction(X, y) @ u) < 0.5  # the top PC is the nuisance, as it should be


def test_direction_errors_name_the_problem():
    X, y, _ = planted_data(n=10)
    with pytest.raises(ValueError, match="both \\+1 and -1"):
        mean_difference(X, torch.ones(10, dtype=torch.long))
    with pytest.raises(ValueError, match="both \\+1 and -1"):
        mean_difference(X, torch.tensor([0, 1] * 5))
    with pytest.raises(ValueError, match="one label per row"):
        logistic_probe(X, y[:5])
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        pca_direction(X[0])
    with pytest.raises(ValueError, match="unknown direction method"):
        fit_directions(X, y, ["mean_diff", "ica"])
    with pytest.raises(ValueError, match="identical"):
        mean_difference(torch.ones(4, 3), torch.tensor([1, -1, 1, -1]))


def test_cosine_matrix_and_direction_classifier():
    X, y, u = planted_data()
    vectors = fit_directions(X, y)
    cos = cosine_matrix({**vectors, "minus": -vectors["mean_diff"]})
    assert (cos.values.diagonal() == pytest.approx(1.0, abs=1e-5))
    assert cos.equals(cos.T) and cos.loc["mean_diff", "minus"] == pytest.approx(-1.0, abs=1e-5)
    direction = Direction.fit(X, y, "probe")
    assert direction.accuracy(X, y) == 1.0
    assert direction.accuracy(X, -y) == 0.0


def test_das_direction_recovers_the_planted_direction():
    hm, u = planted_model(gamma=0.05)  # a weak copy: the answer's logit stays linear in the u-coordinate
    reviews = toy_movie_reviews(hm.tokenizer, test_fraction=0.5, adjectives=ADJECTIVES, verbs=VERBS)
    pairs = contrast_pairs(reviews, seed=0)  # all four prompts, each once as the clean one
    data = counterfactual_pairs(hm, pairs, [5, 8])
    assert len(data) == 4 and data.k == 2
    reference = torch.randn(u.shape[0], generator=torch.Generator().manual_seed(7))
    reference = reference + 10 * u  # only its sign relative to u matters
    config = TrainConfig(epochs=30, batch_size=4, lr=0.05, patience=100, progress=False)
    # layer 0's attention is the only route to the answer: intervene on its input
    v, info = das_direction(hm, "L0.resid_pre", pairs, [5, 8], config=config, orient_with=reference)
    assert float(v @ u) > 0.95, info
    assert info["train_iia"] == 1.0
    with pytest.raises(ValueError, match="lack columns"):
        counterfactual_pairs(hm, pairs.drop(columns="answer"), [5, 8])
