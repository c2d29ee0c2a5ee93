"""High-level causal models: variables with value sets, parents and mechanisms (plain functions).

A causal model states *how* a task is solved: input variables, intermediate variables each
computed from its parents by a Python function, and the output. Interchange interventions test
whether a network implements it: set a variable to the value it takes on another input (a
source) and compare the network's output, intervened the same way, with the model's.

>>> m = CausalModel([Variable("a", (0, 1)), Variable("b", (0, 1)),
...                  Variable("same", (False, True), ("a", "b"), lambda a, b: a == b)])
>>> m.run({"a": 0, "b": 1})["same"]
False
>>> m.interchange({"a": 0, "b": 1}, {"same": {"a": 1, "b": 1}})["same"]
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import plotly.graph_objects as go

Inputs = Mapping[str, Any]


@dataclass(frozen=True)
class Variable:
    """One variable: its name, its possible values, its parents and its mechanism.

    Input variables have no parents and no mechanism. ``mechanism(*parent_values)`` takes the
    parents' values in the order of ``parents``.

    >>> Variable("carry", (False, True), ("a0", "b0"), lambda a0, b0: a0 + b0 >= 10).is_input
    False
    """

    name: str
    values: tuple
    parents: tuple[str, ...] = ()
    mechanism: Callable[..., Any] | None = None

    @property
    def is_input(self) -> bool:
        return not self.parents


class CausalModel:
    """A finite DAG of `Variable`s; ``outputs`` default to the variables no other one reads.

    ``sampler(rng) -> inputs`` draws inputs (default: each input variable uniformly from its
    values); tasks whose interesting cases are rare (equalities) pass their own balanced one.
    """

    def __init__(self, variables: Sequence[Variable], outputs: Sequence[str] | None = None, name: str = "",
                 sampler: Callable[[random.Random], dict] | None = None) -> None:
        self.name = name
        self.variables = {v.name: v for v in variables}
        if len(self.variables) != len(variables):
            names = [v.name for v in variables]
            raise ValueError(f"variable names repeat: {sorted({n for n in names if names.count(n) > 1})}; "
                             f"give each variable one name")
        for v in variables:
            unknown = [p for p in v.parents if p not in self.variables]
            if unknown:
                raise ValueError(f"variable {v.name!r} has unknown parents {unknown}; known: {sorted(self.variables)}")
            if v.is_input != (v.mechanism is None):
                raise ValueError(f"variable {v.name!r}: an input variable has neither parents nor a mechanism, "
                                 f"any other has both; got parents {v.parents} and mechanism {v.mechanism}")
            if not v.values:
                raise ValueError(f"variable {v.name!r} has an empty value set; list its possible values")
        self.order = self._topological_order()
        children = {p for v in variables for p in v.parents}
        self.outputs = list(outputs) if outputs else [n for n in self.order if n not in children]
        for name in self.outputs:
            self._check_name(name)
        self.inputs = [n for n in self.order if self.variables[n].is_input]
        self.sampler = sampler

    def _topological_order(self) -> list[str]:
        order, state = [], {}

        def visit(name: str, path: tuple[str, ...]) -> None:
            if state.get(name) == "done":
                return
            if state.get(name) == "visiting":
                raise ValueError(f"the variables form a cycle: {' -> '.join(path + (name,))}; a causal model is acyclic")
            state[name] = "visiting"
            for parent in self.variables[name].parents:
                visit(parent, path + (name,))
            state[name] = "done"
            order.append(name)

        for name in self.variables:
            visit(name, ())
        return order

    def _check_name(self, name: str) -> None:
        if name not in self.variables:
            raise KeyError(f"no variable {name!r} in causal model {self.name or '(unnamed)'}; "
                           f"variables: {self.order}")

    @property
    def output(self) -> str:
        """The single output variable (an error when there are several)."""
        if len(self.outputs) != 1:
            raise ValueError(f"this model has outputs {self.outputs}; name the one you mean")
        return self.outputs[0]

    # ---- running and intervening ----------------------------------------------------------
    def run(self, inputs: Inputs, interventions: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every variable's value on ``inputs``, with ``interventions`` (name -> value) held fixed.

        An intervened variable ignores its mechanism; its descendants see the set value.
        """
        interventions = dict(interventions or {})
        for name in interventions:
            self._check_name(name)
        missing = [n for n in self.inputs if n not in inputs and n not in interventions]
        if missing:
            raise KeyError(f"inputs lack {missing}; this model's inputs are {self.inputs}")
        values: dict[str, Any] = {}
        for name in self.order:
            v = self.variables[name]
            if name in interventions:
                values[name] = interventions[name]
            elif v.is_input:
                values[name] = inputs[name]
            else:
                values[name] = v.mechanism(*(values[p] for p in v.parents))
        return values

    def interchange(self, base: Inputs, sources: Mapping[str, Inputs]) -> dict[str, Any]:
        """Run ``base`` with each named variable set to its value on its own source input.

        >>> m = CausalModel([Variable("x", (1, 2)), Variable("y", (2, 4), ("x",), lambda x: 2 * x)])
        >>> m.interchange({"x": 1}, {"y": {"x": 2}})["y"]
        4
        """
        return self.run(base, {name: self.run(source)[self._name_checked(name)] for name, source in sources.items()})

    def _name_checked(self, name: str) -> str:
        self._check_name(name)
        return name

    # ---- sampling -------------------------------------------------------------------------
    def sample_input(self, rng: random.Random) -> dict[str, Any]:
        """One input assignment (the model's sampler, else uniform over each input's values)."""
        if self.sampler is not None:
            return dict(self.sampler(rng))
        return {n: rng.choice(self.variables[n].values) for n in self.inputs}

    def sample_inputs(self, n: int, seed: int = 0, where: Callable[[dict], bool] | None = None,
                      max_tries: int = 100) -> list[dict[str, Any]]:
        """``n`` inputs drawn with ``seed``; ``where(values)`` (all variables' values) filters them.

        >>> m = CausalModel([Variable("x", tuple(range(10)))])
        >>> all(i["x"] > 5 for i in m.sample_inputs(5, where=lambda v: v["x"] > 5))
        True
        """
        rng, out, tries = random.Random(seed), [], 0
        while len(out) < n:
            tries += 1
            if tries > max_tries * max(n, 1):
                raise ValueError(f"only {len(out)} of {n} sampled inputs passed the filter in {tries - 1} tries; "
                                 f"loosen the filter or ask for fewer")
            inputs = self.sample_input(rng)
            if where is None or where(self.run(inputs)):
                out.append(inputs)
        return out

    # ---- showing --------------------------------------------------------------------------
    def depth(self) -> dict[str, int]:
        """Each variable's distance from the inputs (inputs: 0)."""
        depth: dict[str, int] = {}
        for name in self.order:
            parents = self.variables[name].parents
            depth[name] = 1 + max(depth[p] for p in parents) if parents else 0
        return depth

    def graph_text(self) -> str:
        """The graph, one line per variable in causal order (``name <- parents``).

        >>> print(CausalModel([Variable("x", (0, 1)), Variable("y", (0, 1), ("x",), lambda x: 1 - x)]).graph_text())
        x (2 values): input
        y (2 values) <- x   [output]
        """
        lines = []
        for name in self.order:
            v = self.variables[name]
            head = f"{name} ({len(v.values)} values)"
            body = ": input" if v.is_input else " <- " + ", ".join(v.parents)
            lines.append(head + body + ("   [output]" if name in self.outputs else ""))
        return "\n".join(lines)

    def __str__(self) -> str:
        return f"CausalModel {self.name}\n{self.graph_text()}" if self.name else self.graph_text()

    def figure(self) -> go.Figure:
        """The graph drawn with plotly: columns by depth, arrows from parents to children."""
        depth = self.depth()
        columns: dict[int, list[str]] = {}
        for name in self.order:
            columns.setdefault(depth[name], []).append(name)
        where = {n: (d, i - (len(ns) - 1) / 2) for d, ns in columns.items() for i, n in enumerate(ns)}
        fig = go.Figure()
        for name in self.order:
            for parent in self.variables[name].parents:
                (x0, y0), (x1, y1) = where[parent], where[name]
                fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y",
                                   showarrow=True, arrowhead=2, arrowwidth=1.5, standoff=14, startstandoff=14)
        kinds = ["input" if self.variables[n].is_input else "output" if n in self.outputs else "intermediate"
                 for n in self.order]
        colors = {"input": "#9ecae1", "intermediate": "#fdae6b", "output": "#a1d99b"}
        fig.add_trace(go.Scatter(
            x=[where[n][0] for n in self.order], y=[where[n][1] for n in self.order], mode="markers+text",
            text=list(self.order), textposition="middle center", marker={"size": 44, "color": [colors[k] for k in kinds]},
            hovertext=[f"{n}: {k}, {len(self.variables[n].values)} values" for n, k in zip(self.order, kinds)],
            hoverinfo="text"))
        fig.update_layout(title=f"Causal model {self.name}".strip(), showlegend=False, template="plotly_white",
                          xaxis={"visible": False}, yaxis={"visible": False})
        return fig


__all__ = ["CausalModel", "Inputs", "Variable"]
