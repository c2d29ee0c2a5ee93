"""Entity-attribute data in the RAVEL format: loading, the embedded city set, queries, counterfactuals.

>>> from workbench.data import load_ravel, city_dataset, build_queries, filter_correct
"""

from .cities import city_dataset
from .counterfactuals import KINDS, ravel_counterfactuals
from .queries import answer_text, answer_token, build_queries, entity_last_token, filter_correct, predict_next
from .ravel import SPLITS, RavelData, load_ravel
from .setup import RavelSetup, pick_entities, prepare_ravel

__all__ = ["KINDS", "RavelData", "SPLITS", "answer_text", "answer_token", "build_queries", "city_dataset",
           "entity_last_token", "filter_correct", "load_ravel", "pick_entities", "predict_next", "prepare_ravel",
           "ravel_counterfactuals", "RavelSetup"]
