"""Every dataset the project reads, in one place: the registry and cache, and one reader per dataset.

| dataset (``datasets/<name>.md``) | reader |
| --- | --- |
| ``ravel`` | `ravel.load_ravel` (+ `queries`, `counterfactuals`, `setup` for DAS / RAVEL runs) |
| ``geonames-cities`` | `cities.city_dataset` |
| ``sst`` | `sst.load_sst` (``binary=True`` is SST-2), `sst.sst2` |
| ``toy-movie-reviews`` | `reviews.toy_movie_reviews`, `reviews.contrast_pairs` |
| ``lexicons`` | `lexicons.load_vader`, `lexicons.load_textblob` |
| ``alice29``, ``alice-pg11`` | `texts.load_text` |
| ``persona-instructions`` | `instructions.persona_pairs` |

`registry` holds the cards' machine-readable half and resolves cached datasets;
`fetch` downloads (``workbench data fetch NAME``), imports (``--from PATH``) and verifies them.

>>> from workbench.data import load_ravel, city_dataset, build_queries, filter_correct
"""

from .cities import city_dataset
from .counterfactuals import KINDS, ravel_counterfactuals
from .queries import answer_text, answer_token, build_queries, entity_last_token, filter_correct, predict_next
from .ravel import SPLITS, RavelData, load_ravel
from .registry import REGISTRY, DatasetMissing, data_root, dataset_path
from .report import DataReport
from .setup import RavelSetup, pick_entities, prepare_ravel

__all__ = ["DataReport", "DatasetMissing", "KINDS", "REGISTRY", "RavelData", "SPLITS", "answer_text", "answer_token",
           "build_queries", "city_dataset", "data_root", "dataset_path", "entity_last_token", "filter_correct",
           "load_ravel", "pick_entities", "predict_next", "prepare_ravel", "ravel_counterfactuals", "RavelSetup"]
