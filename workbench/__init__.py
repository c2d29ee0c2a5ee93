"""Interpretability workbench: one intervention API over Hugging Face models."""

from .adapters import ADAPTERS, supported_families
from .hooked import HookedModel
from .interventions import AddVector, Collect, Intervention, MeanAblation, Patch, ZeroAblation
from .models import DEFAULT_MODEL, load_model
from .plan import Plan, PlanItem
from .positions import AllTokens, FirstLast, Indices, Positions, TokenMatch, parse_positions
from .sites import COMPONENTS, Site

__all__ = [
    "ADAPTERS", "AddVector", "AllTokens", "COMPONENTS", "Collect", "DEFAULT_MODEL", "FirstLast",
    "HookedModel", "Indices", "Intervention", "MeanAblation", "Patch", "Plan", "PlanItem",
    "Positions", "Site", "TokenMatch", "ZeroAblation", "load_model", "parse_positions",
    "supported_families",
]
