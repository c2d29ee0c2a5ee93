"""Devices: every intervention kind, however built or loaded, runs on its site's device.

A CPU machine has one real device, so the second one is ``meta``: a layer moved there makes any
tensor an intervention creates on the CPU (a mask, a vector, a basis, a boundary) fail the same
way a CPU tensor fails next to a CUDA one. Placement is checked per layer, as under ``device_map``.
"""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from reft import ReftConfig, get_reft_model, load_reft
from workbench import AddVector, Collect, MeanAblation, Patch, PlanItem, ZeroAblation
from workbench.das import SubspaceInterchange, build_intervention
from workbench.das.saving import load_das
from workbench.steering import load_steering, save_steering

META = torch.device("meta")


def split_llama():
    """A tiny Llama whose layer 1 lives on ``meta`` (layers 0 and 2 and the embeddings on the CPU)."""
    hm = tiny_model("llama")
    hm.layout.blocks[1].to(META)
    return hm


def tensors_of(module: torch.nn.Module) -> list[torch.Tensor]:
    return list(module.parameters()) + list(module.buffers())


def assert_runs_on(intervention: torch.nn.Module, device: torch.device, d: int) -> None:
    """Every tensor on ``device``, and a forward on ``device`` inputs creates nothing elsewhere."""
    assert tensors_of(intervention), "nothing to check"
    assert {t.device.type for t in tensors_of(intervention)} == {device.type}
    base = torch.zeros(2, 3, d, device=device)  # (B, k, d)
    out = intervention(base, torch.ones(2, 3, d, device=device))
    assert out.device.type == device.type and out.shape == base.shape


def every_kind(d: int) -> dict[str, torch.nn.Module]:
    """One of each intervention kind with tensors, built on the CPU as a user would."""
    return {
        "patch-dims": Patch(dims=[0, 3]), "zero-dims": ZeroAblation(dims=[1]),
        "mean": MeanAblation(torch.randn(d), dims=[0, 2]), "steer": AddVector(torch.randn(d), 2.0),
        "das": build_intervention("das", d, 2), "rotated": build_intervention("rotated", d, 3),
        "boundless": build_intervention("boundless", d, 2, max_rank=4),
        "fixed-basis": SubspaceInterchange(torch.randn(2, d)),
    }


@pytest.mark.parametrize("name", list(every_kind(32)))
def test_installing_moves_each_kind_to_its_layers_device(name):
    hm = split_llama()
    intervention = every_kind(32)[name]
    on_cpu = hm._resolve_plan([PlanItem("L0.mlp_out", "l1", intervention)])  # what `intervene` does
    assert on_cpu[0].device.type == "cpu"
    assert_runs_on(intervention, torch.device("cpu"), 32)
    on_meta = hm._resolve_plan([PlanItem("L1.resid_post", "l1", intervention)])
    assert on_meta[0].device == META
    assert_runs_on(intervention, META, 32)


def test_site_devices_follow_the_dispatch():
    hm = split_llama()
    assert hm.device_of("L0.resid_post").type == "cpu"
    assert hm.device_of("L1.resid_pre").type == "cpu"  # layer 1's input is layer 0's output
    for site in ("L1.resid_post", "L1.attn_out", "L1.mlp_out", "L1.mlp_act", "L1.z", "L1.head2.z", "L2.resid_pre"):
        assert hm.device_of(site) == META, site
    assert hm.device.type == "cpu"  # inputs go to the embeddings


def test_source_values_move_with_the_plan():
    hm = split_llama()
    item = PlanItem("L1.resid_post", "l1", Patch(), source_values=torch.ones(1, 1, 32))
    assert hm._resolve_plan([item])[0].source.device == META


def test_reft_builds_and_loads_on_each_layers_device(tmp_path):
    hm = tiny_model("llama")
    config = ReftConfig(layers=(0, 1), rank=2, positions="f1+l1")
    get_reft_model(hm, config).save(tmp_path / "reft")
    split = split_llama()
    for reft in (get_reft_model(split, config), load_reft(tmp_path / "reft", split, check_base=False)):
        assert {t.device.type for t in tensors_of(reft.intervention_at(0))} == {"cpu"}
        edit = reft.intervention_at(1)
        assert {t.device.type for t in tensors_of(edit)} == {"meta"}
        assert edit(torch.zeros(2, 2, 32, device=META)).device == META


def test_das_and_steering_load_onto_the_sites_device(tmp_path):
    from safetensors.torch import save_file
    import json

    das = build_intervention("das", 32, 2)
    (tmp_path / "das").mkdir()
    save_file({k: v.contiguous() for k, v in das.state_dict().items()}, str(tmp_path / "das" / "intervention.safetensors"))
    (tmp_path / "das" / "intervention.json").write_text(json.dumps({"method": "das", "site": "L1.resid_post",
                                                                    "d": 32, "k": 2}))
    loaded, meta = load_das(tmp_path / "das", device=META)
    assert_runs_on(loaded, META, 32)
    save_steering(tmp_path / "steer", "L1.resid_post", torch.randn(32), scale=3.0)
    plan, _ = load_steering(tmp_path / "steer", device=META, dtype=torch.bfloat16)
    assert plan[0].intervention.vector.device == META and plan[0].intervention.vector.dtype == torch.bfloat16
    hm = split_llama()
    plan, _ = load_steering(tmp_path / "steer")  # on the CPU: installing moves it
    hm._resolve_plan(plan)
    assert plan[0].intervention.vector.device == META


def test_collect_reads_on_any_device():
    hm = split_llama()
    collect = Collect()
    hm._resolve_plan([PlanItem("L1.resid_post", "l1", collect)])
    assert collect(torch.zeros(1, 1, 32, device=META)).device == META and collect.values[0].device == META


def test_every_model_command_takes_device_and_dtype():
    import argparse

    from workbench.cli import build_parser

    def leaves(parser, path=()):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield path, parser
        for action in subs:
            for name, child in action.choices.items():
                yield from leaves(child, path + (name,))

    checked = []
    for path, parser in leaves(build_parser()):
        if path[0] == "data":  # no model involved
            continue
        options = {o for a in parser._actions for o in a.option_strings}
        assert {"--device", "--dtype", "--model"} <= options, path
        checked.append(" ".join(path))
    assert {"patch", "das", "ravel", "reft train", "reft generate", "memorize"} <= set(checked), checked
