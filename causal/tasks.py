"""Tasks shipped as causal models, and how a language model is asked each one (prompt, answer, positions).

| task | inputs | intermediate variables | output |
| --- | --- | --- | --- |
| `hierarchical_equality` | W, X, Y, Z (objects) | WX = (W == X), YZ = (Y == Z) | O = (WX == YZ) |
| `addition` | a1 a0 + b1 b0 (digits) | carry = a0 + b0 >= 10, ones, tens | sum |
| `ioi` | first, second (names), repeated, template | io_position = the name not repeated | output name |
| `ravel` | entity, template | query (the template's attribute), one per attribute | answer |

>>> model = hierarchical_equality(n_objects=3)
>>> model.run({"W": 0, "X": 0, "Y": 1, "Z": 2})["O"]
False
>>> addition().model.run({"a1": 2, "a0": 7, "b1": 1, "b0": 5})["sum"]
42
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from .model import CausalModel, Variable

LAST = "last"  # the named position of a prompt's last token, in every task


@dataclass(frozen=True)
class LMTask:
    """A causal model and how a language model sees it.

    ``render(inputs) -> (text, spans)``: the prompt and named character spans (the token
    holding a span's last character is that position). ``answer(output_value) -> str``: the
    continuation whose first token is the label. ``positions``: the named positions, ``last``
    included.
    """

    name: str
    model: CausalModel
    render: Callable[[dict], tuple[str, dict[str, tuple[int, int]]]]
    answer: Callable[[Any], str]
    positions: tuple[str, ...]
    variables: tuple[str, ...]  # the intermediate variables worth aligning


# ---- hierarchical equality (the DAS paper's task) -------------------------------------------
def hierarchical_equality(n_objects: int = 100) -> CausalModel:
    """(W == X) == (Y == Z) over ``n_objects`` objects (vectors in the toy network, see `causal.toy`).

    The sampler is balanced: WX and YZ are each true half the time (uniform draws would make
    equality rare).
    """
    if n_objects < 2:
        raise ValueError(f"n_objects = {n_objects}: equality needs at least 2 objects; e.g. n_objects=100")
    objects = tuple(range(n_objects))

    def pair(rng: random.Random, equal: bool) -> tuple[int, int]:
        a = rng.randrange(n_objects)
        if equal:
            return a, a
        b = rng.randrange(n_objects - 1)
        return a, b + (b >= a)  # any other object

    def sampler(rng: random.Random) -> dict:
        (w, x), (y, z) = pair(rng, rng.random() < 0.5), pair(rng, rng.random() < 0.5)
        return {"W": w, "X": x, "Y": y, "Z": z}

    flags = (False, True)
    return CausalModel([
        Variable("W", objects), Variable("X", objects), Variable("Y", objects), Variable("Z", objects),
        Variable("WX", flags, ("W", "X"), lambda w, x: w == x),
        Variable("YZ", flags, ("Y", "Z"), lambda y, z: y == z),
        Variable("O", flags, ("WX", "YZ"), lambda wx, yz: wx == yz),
    ], name="hierarchical_equality", sampler=sampler)


# ---- two-digit addition -----------------------------------------------------------------------
ADDITION_SHOTS = "12+35=47\n26+31=57\n"  # two worked examples: the small model then answers in kind


def addition(shots: str = ADDITION_SHOTS) -> LMTask:
    """a1a0 + b1b0 with the carry as a variable; tens digits with a1 + b1 <= 8 keep the sum below
    100, so the answer's first token is the tens digit ``a1 + b1 + carry``: the carry decides it.

    >>> text, spans = addition().render({"a1": 2, "a0": 7, "b1": 1, "b0": 5})
    >>> text.splitlines()[-1], text[slice(*spans["b0"])]
    ('27+15=', '5')
    """
    digits = tuple(range(10))

    def sampler(rng: random.Random) -> dict:
        a1 = rng.randint(1, 7)
        return {"a1": a1, "a0": rng.randrange(10), "b1": rng.randint(1, 8 - a1), "b0": rng.randrange(10)}

    model = CausalModel([
        Variable("a1", digits), Variable("a0", digits), Variable("b1", digits), Variable("b0", digits),
        Variable("carry", (False, True), ("a0", "b0"), lambda a0, b0: a0 + b0 >= 10),
        Variable("ones", digits, ("a0", "b0"), lambda a0, b0: (a0 + b0) % 10),
        Variable("tens", digits, ("a1", "b1", "carry"), lambda a1, b1, c: a1 + b1 + int(c)),
        Variable("sum", tuple(range(100)), ("tens", "ones"), lambda t, o: 10 * t + o),
    ], name="addition", sampler=sampler)

    def render(v: dict) -> tuple[str, dict]:
        text = f"{shots}{v['a1']}{v['a0']}+{v['b1']}{v['b0']}="
        end = len(text)
        return text, {"a1": (end - 6, end - 5), "a0": (end - 5, end - 4), "b1": (end - 3, end - 2),
                      "b0": (end - 2, end - 1), LAST: (end - 1, end)}

    return LMTask("addition", model, render, lambda total: str(total), ("a0", "b0", LAST), ("carry",))


# ---- IOI-style name tasks ---------------------------------------------------------------------
IOI_NAMES = ("Mary", "John", "Tom", "James", "Anna", "Sarah", "Michael", "David", "Lisa", "Kate",
             "Paul", "Emma", "Alice", "Peter", "Laura", "Mark", "Susan", "Daniel", "Rachel", "Bob")
IOI_TEMPLATES = (
    "When {A} and {B} went to the store, {S} gave a drink to",
    "After {A} and {B} arrived at the party, {S} handed a gift to",
    "While {A} and {B} were at the park, {S} threw a ball to",
    "Then {A} and {B} had lunch at the cafe, and {S} passed the salt to",
)


def ioi(names: tuple[str, ...] = IOI_NAMES, templates: tuple[str, ...] = IOI_TEMPLATES) -> LMTask:
    """Indirect-object identification from templates: two names, one repeated as the subject; the
    answer is the other one. ``io_position`` (0: the first-mentioned name, 1: the second) is the
    variable: set from a source where the other name repeats, the answer flips to the other name.

    >>> task = ioi()
    >>> task.model.run({"first": "Mary", "second": "John", "repeated": 1, "template": 0})["output"]
    'Mary'
    """
    if len(set(names)) < 2:
        raise ValueError(f"IOI needs at least 2 distinct names, got {names}")

    def sampler(rng: random.Random) -> dict:
        first, second = rng.sample(list(names), 2)
        return {"first": first, "second": second, "repeated": rng.randrange(2), "template": rng.randrange(len(templates))}

    model = CausalModel([
        Variable("first", tuple(names)), Variable("second", tuple(names)), Variable("repeated", (0, 1)),
        Variable("template", tuple(range(len(templates)))),
        Variable("io_position", (0, 1), ("repeated",), lambda r: 1 - r),
        Variable("output", tuple(names), ("first", "second", "io_position"), lambda a, b, p: (a, b)[p]),
    ], outputs=["output"], name="ioi", sampler=sampler)

    def render(v: dict) -> tuple[str, dict]:
        subject = (v["first"], v["second"])[v["repeated"]]
        template = templates[v["template"]]
        text = template.format(A=v["first"], B=v["second"], S=subject)
        spans, cursor = {}, 0
        for key, value in (("A", v["first"]), ("B", v["second"]), ("S2", subject)):
            start = text.index(value, cursor) if key != "S2" else text.index(value, text.index(",") if "," in text else 0)
            spans[key] = (start, start + len(value))
            cursor = start + len(value)
        spans[LAST] = (len(text) - 1, len(text))
        return text, spans

    return LMTask("ioi", model, render, lambda name: " " + name, ("S2", LAST), ("io_position",))


# ---- RAVEL entity attributes ----------------------------------------------------------------
def ravel(data, attributes: list[str] | None = None, entities: list[str] | None = None) -> LMTask:
    """RAVEL restated: an entity and a template; the template names the queried attribute, each
    attribute's variable looks the entity up, the answer is the queried attribute's value.

    ``data``: a `workbench.data.RavelData`. Interchanging attribute A from a source entity changes
    the answer of prompts that ask for A (RAVEL's Cause) and leaves the others (Isolate).
    """
    attributes = data.resolve(attributes) if attributes else data.attribute_names
    entities = list(entities) if entities is not None else [e for e in data.entities()
                                                           if all(a in data.attributes[e] for a in attributes)]
    if len(entities) < 2:
        raise ValueError(f"RAVEL model needs at least 2 entities with values for {attributes}, got {len(entities)}")
    templates = tuple(t for a in attributes for t in data.templates(a))
    attribute_of = {t: a for a in attributes for t in data.templates(a)}
    values = {a: tuple(sorted({data.attributes[e][a] for e in entities})) for a in attributes}
    lookups = [Variable(a, values[a], ("entity",), lambda e, a=a: data.attributes[e][a]) for a in attributes]

    def answer_of(query: str, *attribute_values: str) -> str:
        return dict(zip(attributes, attribute_values))[query]

    model = CausalModel([
        Variable("entity", tuple(entities)), Variable("template", templates),
        Variable("query", tuple(attributes), ("template",), attribute_of.__getitem__), *lookups,
        Variable("answer", tuple(sorted({v for vs in values.values() for v in vs})), ("query", *attributes), answer_of),
    ], outputs=["answer"], name=f"ravel-{data.entity_type}")

    def render(v: dict) -> tuple[str, dict]:
        before, after = v["template"].split("%s")
        text = before + v["entity"] + after
        return text, {"entity": (len(before), len(before) + len(v["entity"])), LAST: (len(text) - 1, len(text))}

    return LMTask(f"ravel-{data.entity_type}", model, render, lambda value: " " + value, ("entity", LAST),
                  tuple(attributes))


LM_TASKS = {"addition": addition, "ioi": ioi}  # built without data; ravel takes a loaded RavelData

__all__ = ["ADDITION_SHOTS", "IOI_NAMES", "IOI_TEMPLATES", "LAST", "LMTask", "LM_TASKS", "addition",
           "hierarchical_equality", "ioi", "ravel"]
