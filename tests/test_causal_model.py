"""CausalModel semantics and the shipped tasks' causal models (each checked against a direct formula)."""

from __future__ import annotations

import itertools
import random

import pytest

from causal.model import CausalModel, Variable
from causal.tasks import IOI_TEMPLATES, addition, hierarchical_equality, ioi, ravel


def chain() -> CausalModel:
    return CausalModel([
        Variable("x", (0, 1, 2)), Variable("y", (0, 1, 2)),
        Variable("s", tuple(range(5)), ("x", "y"), lambda x, y: x + y),
        Variable("p", tuple(range(5)), ("x", "y"), lambda x, y: x * y),
        Variable("o", tuple(range(-4, 5)), ("s", "p"), lambda s, p: s - p),
    ], name="chain")


def test_interchange_equals_recomputing_with_the_variable_set_by_hand():
    m = chain()
    for base, source in itertools.product(m.sample_inputs(6, seed=1), m.sample_inputs(6, seed=2)):
        got = m.interchange(base, {"s": source})["o"]
        s_source = source["x"] + source["y"]  # the variable, by hand
        by_hand = s_source - base["x"] * base["y"]
        assert got == by_hand
        assert m.run(base, {"s": s_source})["o"] == by_hand
    # two variables, each from its own source
    base, a, b = {"x": 2, "y": 2}, {"x": 1, "y": 0}, {"x": 2, "y": 1}
    assert m.interchange(base, {"s": a, "p": b})["o"] == (1 + 0) - (2 * 1)
    # intervening on an input propagates to all its descendants
    assert m.run({"x": 0, "y": 2}, {"x": 2}) == m.run({"x": 2, "y": 2})


def test_bad_models_and_inputs_name_the_problem():
    with pytest.raises(ValueError, match="cycle"):
        CausalModel([Variable("a", (0,), ("b",), lambda b: b), Variable("b", (0,), ("a",), lambda a: a)])
    with pytest.raises(ValueError, match="unknown parents"):
        CausalModel([Variable("a", (0,), ("zz",), lambda z: z)])
    with pytest.raises(ValueError, match="repeat"):
        CausalModel([Variable("a", (0,)), Variable("a", (1,))])
    with pytest.raises(KeyError, match="inputs lack"):
        chain().run({"x": 1})
    with pytest.raises(KeyError, match="no variable 'q'"):
        chain().interchange({"x": 1, "y": 1}, {"q": {"x": 0, "y": 0}})


def test_sampling_filters_and_is_seeded():
    m = chain()
    picked = m.sample_inputs(20, seed=3, where=lambda v: v["o"] > 0)
    assert all(m.run(i)["o"] > 0 for i in picked)
    assert picked == m.sample_inputs(20, seed=3, where=lambda v: v["o"] > 0)
    assert picked != m.sample_inputs(20, seed=4, where=lambda v: v["o"] > 0)
    with pytest.raises(ValueError, match="passed the filter"):
        m.sample_inputs(3, where=lambda v: v["o"] > 100)


def test_graph_prints_and_draws():
    m = chain()
    text = m.graph_text()
    assert "o (9 values) <- s, p   [output]" in text and text.splitlines()[0].startswith("x")
    fig = m.figure()
    assert list(fig.data[0].text) == m.order and len(fig.layout.annotations) == 6  # one arrow per edge
    assert m.depth() == {"x": 0, "y": 0, "s": 1, "p": 1, "o": 2}


def test_hierarchical_equality_is_the_formula_and_balanced():
    m = hierarchical_equality(n_objects=3)
    for w, x, y, z in itertools.product(range(3), repeat=4):
        values = m.run({"W": w, "X": x, "Y": y, "Z": z})
        assert values["WX"] == (w == x) and values["YZ"] == (y == z) and values["O"] == ((w == x) == (y == z))
    draws = m.sample_inputs(2000, seed=0)
    share = sum(d["W"] == d["X"] for d in draws) / len(draws)
    assert 0.45 < share < 0.55  # uniform draws would give 1/3


def test_addition_carry_decides_the_first_answer_token():
    task = addition()
    m = task.model
    rng = random.Random(0)
    for _ in range(200):
        v = m.sample_input(rng)
        a, b = 10 * v["a1"] + v["a0"], 10 * v["b1"] + v["b0"]
        values = m.run(v)
        assert values["sum"] == a + b and values["carry"] == (v["a0"] + v["b0"] >= 10)
        assert task.answer(values["sum"])[0] == str(values["tens"])  # the label token is the tens digit
        flipped = m.run(v, {"carry": not values["carry"]})
        assert task.answer(flipped["sum"])[0] != task.answer(values["sum"])[0]
        text, spans = task.render(v)
        assert text.endswith(f"{a}+{b}=") and text[slice(*spans["a0"])] == str(v["a0"])


def test_ioi_answer_is_the_name_not_repeated():
    task = ioi()
    rng = random.Random(0)
    for _ in range(100):
        v = task.model.sample_input(rng)
        text, spans = task.render(v)
        names = (v["first"], v["second"])
        subject = text[slice(*spans["S2"])]
        assert subject == names[v["repeated"]] and text.index(subject, spans["B"][1]) == spans["S2"][0]
        assert task.model.run(v)["output"] == names[1 - v["repeated"]]
        assert text.count(names[1 - v["repeated"]]) == 1 and text.startswith(IOI_TEMPLATES[v["template"]][:4])


def test_ravel_model_looks_up_the_queried_attribute():
    from workbench.data import city_dataset
    data = city_dataset()
    attributes = data.attribute_names[:2]
    task = ravel(data, attributes, entities=data.entities()[:30])
    m = task.model
    for v in m.sample_inputs(100, seed=0):
        query = next(a for a in attributes if v["template"] in data.templates(a))
        assert m.run(v)["answer"] == data.attributes[v["entity"]][query]
        text, spans = task.render(v)
        assert text[slice(*spans["entity"])] == v["entity"]
    # interchanging the queried attribute from another entity gives that entity's value (Cause)
    base, source = m.variables["entity"].values[:2]
    ask_first, ask_second = data.templates(attributes[0])[0], data.templates(attributes[1])[0]
    swap = {attributes[0]: {"entity": source, "template": ask_first}}
    assert m.interchange({"entity": base, "template": ask_first}, swap)["answer"] == data.attributes[source][attributes[0]]
    assert m.interchange({"entity": base, "template": ask_second}, swap)["answer"] == data.attributes[base][attributes[1]]
