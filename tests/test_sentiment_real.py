"""The sentiment direction on the real SmolLM2-135M (slow: loads the model)."""

from __future__ import annotations

import pytest

from workbench.data.reviews import contrast_pairs, toy_movie_reviews
from probes.sentiment.experiments import patching_curve
from probes.sentiment.fit import fit_sentiment_directions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fitted(smollm2):
    reviews = toy_movie_reviews(smollm2.tokenizer, test_fraction=0.3, seed=0)
    return reviews, fit_sentiment_directions(smollm2, reviews, layers=[6], methods=["mean_diff", "probe"])


def test_direction_from_training_adjectives_separates_held_out_adjectives(fitted):
    reviews, result = fitted
    train, test = (set(reviews.loc[reviews.split == s, "adjective"]) for s in ("train", "test"))
    assert not train & test and len(test) >= 40
    scores = result.scores.set_index(["method", "split"])["accuracy"]
    assert scores[("mean_diff", "test")] >= 0.9
    assert scores[("probe", "test")] >= 0.9


def test_patching_the_direction_moves_the_answer_toward_the_clean_sentiment(smollm2, fitted):
    reviews, result = fitted
    pairs = contrast_pairs(reviews, "test").groupby("sentiment").head(8)
    curve = patching_curve(smollm2, pairs, result, [6], ["mean_diff"], ["all", "comma"]).set_index("positions")
    assert curve.loc["all", "ld_clean"] > 0 > curve.loc["all", "ld_flipped"]
    assert curve.loc["all", "recovery"] > 0.3
    assert abs(curve.loc["comma", "recovery"]) < curve.loc["all", "recovery"]
