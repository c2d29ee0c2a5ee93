"""Synthetic RAVEL-format releases, written by the tests (no shared files needed).

`write_release` writes the four files of one entity type; `quirky_nobel_release` is a small
``nobel_prize_winner`` release with every quirk the loader must survive: empty and null values,
an attribute with templates but no values, a template without ``%s`` and one without a split,
an entity without a split, duplicate entities (a repeated JSON key, and the same name in NFC and
NFD forms), Unicode names, attribute names with spaces and multi-token values.
"""

from __future__ import annotations

import json
from pathlib import Path


def write_release(folder: Path, entity_type: str, attributes: dict, prompts: dict,
                  entity_split: dict | None = None, prompt_split: dict | None = None,
                  raw_attributes: str | None = None) -> Path:
    """The four RAVEL files for ``entity_type`` in ``folder`` (splits default to all 'train').

    ``raw_attributes`` replaces the attributes file's text (e.g. to repeat a JSON key).
    """
    folder.mkdir(parents=True, exist_ok=True)
    entity_split = entity_split if entity_split is not None else {e: "train" for e in attributes}
    prompt_split = prompt_split if prompt_split is not None else {t: "train" for ts in prompts.values() for t in ts}
    files = {"entity_attributes": attributes, "attribute_to_prompts": prompts, "entity_to_split": entity_split,
             "prompt_to_split": prompt_split}
    for name, obj in files.items():
        text = json.dumps(obj, ensure_ascii=False, indent=1)
        if name == "entity_attributes" and raw_attributes is not None:
            text = raw_attributes
        (folder / f"ravel_{entity_type}_{name}.json").write_text(text, encoding="utf-8")
    return folder


# Laureates with facts a small model may know; splits cycle train/val/test.
LAUREATES = {
    "Albert Einstein": ("Physics", "Germany"), "Marie Curie": ("Physics", "Poland"),
    "Niels Bohr": ("Physics", "Denmark"), "Erwin Schrödinger": ("Physics", "Austria"),
    "Enrico Fermi": ("Physics", "Italy"), "Max Planck": ("Physics", "Germany"),
    "Paul Dirac": ("Physics", "England"), "Richard Feynman": ("Physics", "United States"),
    "Werner Heisenberg": ("Physics", "Germany"), "Linus Pauling": ("Chemistry", "United States"),
    "Ernest Rutherford": ("Chemistry", "New Zealand"), "Dorothy Hodgkin": ("Chemistry", "Egypt"),
    "Fritz Haber": ("Chemistry", "Poland"), "Alexander Fleming": ("Medicine", "Scotland"),
    "Ivan Pavlov": ("Medicine", "Russia"), "Robert Koch": ("Medicine", "Germany"),
    "Toni Morrison": ("Literature", "United States"), "Ernest Hemingway": ("Literature", "United States"),
    "Gabriel García Márquez": ("Literature", "Colombia"), "Rabindranath Tagore": ("Literature", "India"),
    "Albert Camus": ("Literature", "Algeria"), "Thomas Mann": ("Literature", "Germany"),
    "Winston Churchill": ("Literature", "England"), "Bob Dylan": ("Literature", "United States"),
    "Martin Luther King Jr.": ("Peace", "United States"), "Nelson Mandela": ("Peace", "South Africa"),
    "Malala Yousafzai": ("Peace", "Pakistan"), "Barack Obama": ("Peace", "United States"),
    "Mother Teresa": ("Peace", "North Macedonia"), "Desmond Tutu": ("Peace", "South Africa"),
    "Milton Friedman": ("Economics", "United States"), "Paul Krugman": ("Economics", "United States"),
}
NOBEL_PROMPTS = {  # split train, val, test, train (forms SmolLM2-135M answers for train and test)
    "Field": ["%s won the Nobel Prize in", "%s is a Nobel laureate in the field of",
              "%s received the Nobel Prize in", "Q: In which field did %s win a Nobel Prize?\nA:"],
    "Country of Birth": ["%s was born in the country of", "The country where %s was born is",
                         "Q: In which country was %s born?\nA:", "%s, a Nobel laureate, was born in"],
    "Award Year": ["%s won the Nobel Prize in the year", "The year %s received the Nobel Prize was"],
    "Gender": ["%s is a"],
}
NOBEL_TEMPLATE_SPLITS = ("train", "val", "test", "train")


def quirky_nobel_release(folder: Path) -> Path:
    """A ``nobel_prize_winner`` release with the quirks listed in the module docstring."""
    attributes = {name: {"Field": field, "Country of Birth": country, "Award Year": "", "Gender": None}
                  for name, (field, country) in LAUREATES.items()}
    attributes["Niels Bohr"]["Field"] = ""  # one empty value: the entity keeps its other attribute
    attributes["Nobody Atall"] = {"Field": " ", "Country of Birth": ""}  # nothing left: dropped
    attributes["Stray Laureate"] = {"Field": "Physics"}  # no split: dropped
    nfd = "Erwin Schro\u0308dinger"  # the same name in NFD form: a duplicate after NFC
    prompts = {a: list(ts) for a, ts in NOBEL_PROMPTS.items()}
    prompts["Field"] = prompts["Field"] + ["The Nobel Prize field, with no slot"]  # no %s: skipped
    prompts["Country of Birth"] = prompts["Country of Birth"] + ["%s came into the world in"]  # no split
    names = list(LAUREATES) + ["Nobody Atall"]
    entity_split = {e: ("train", "val", "test")[i % 3] for i, e in enumerate(names)}
    prompt_split = {t: NOBEL_TEMPLATE_SPLITS[i % 4] for ts in NOBEL_PROMPTS.values() for i, t in enumerate(ts)}
    prompt_split["The Nobel Prize field, with no slot"] = "train"
    body = json.dumps(attributes, ensure_ascii=False, indent=1)  # then two duplicates after the originals:
    raw = body[: body.rindex("}")].rstrip() + (',\n "Marie Curie": {"Field": "Chemistry", "Country of Birth": "France"}'
                                               f',\n "{nfd}": {{"Field": "Physics"}}\n}}')
    write_release(folder, "nobel_prize_winner", attributes, prompts, entity_split, prompt_split, raw_attributes=raw)
    return folder
