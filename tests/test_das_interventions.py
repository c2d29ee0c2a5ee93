"""DAS interventions: bit-exact invariants on real (tiny) models, formulas, errors."""

from __future__ import annotations

import pytest
import torch

from workbench import Patch, PlanItem
from workbench.das import (BoundlessRotatedSpaceIntervention, LowRankRotatedSpaceIntervention,
                           RotatedSpaceIntervention, SubspaceInterchange, build_intervention, orthonormal_rows)

BASES = ["the cat sat on the mat", "Paris is in the country of France"]
SOURCES = ["a dog sat on a movie mat", "Rome is in the city of Italy ."]


def _plain_logits(hm, texts):
    with torch.no_grad():
        return hm.forward(texts, use_cache=False).logits


@pytest.mark.parametrize("cls", [RotatedSpaceIntervention, LowRankRotatedSpaceIntervention])
def test_k_zero_is_identity_bit_exact(decoder, cls):
    d = decoder.site_size("L1.resid_post")
    plan = [PlanItem("L1.resid_post", "all", cls(d, 0))]
    with torch.no_grad():
        logits = decoder.run(BASES, plan, sources=[BASES[::-1]])
    assert torch.equal(logits, _plain_logits(decoder, BASES))


def test_identity_rotation_full_k_equals_full_patch_bit_exact(decoder):
    d = decoder.site_size("L1.resid_post")
    das = RotatedSpaceIntervention(d, d).set_rotation(torch.eye(d))
    with torch.no_grad():
        patched = decoder.run(BASES, [PlanItem("L1.resid_post", "l2", Patch())], sources=[SOURCES])
        rotated = decoder.run(BASES, [PlanItem("L1.resid_post", "l2", das)], sources=[SOURCES])
    assert torch.equal(rotated, patched)
    assert not torch.equal(rotated, _plain_logits(decoder, BASES))  # the patch did change something


def test_head_site_identity_rotation_equals_patch(llama):
    d = llama.site_size("L2.head1.z")
    das = RotatedSpaceIntervention(d, d).set_rotation(torch.eye(d))
    with torch.no_grad():
        a = llama.run(BASES, [PlanItem("L2.head1.z", "l1", Patch())], sources=[SOURCES])
        b = llama.run(BASES, [PlanItem("L2.head1.z", "l1", das)], sources=[SOURCES])
    assert torch.equal(a, b)


def test_low_rank_swaps_exactly_the_subspace():
    torch.manual_seed(0)
    das = LowRankRotatedSpaceIntervention(16, 3)
    base, source = torch.randn(4, 2, 16), torch.randn(4, 2, 16)
    out = das(base, source)
    R = das.rotation.weight.detach()  # (3, 16)
    assert torch.allclose(out @ R.T, source @ R.T, atol=1e-5)  # inside: the source's coordinates
    P = torch.eye(16) - R.T @ R  # projector onto the complement
    assert torch.allclose(out @ P, base @ P, atol=1e-5)  # outside: the base's


def test_full_rotation_first_k_rows_match_low_rank():
    torch.manual_seed(1)
    full = RotatedSpaceIntervention(12, 4)
    low = LowRankRotatedSpaceIntervention(12, 4).set_rotation(full.basis())
    base, source = torch.randn(3, 1, 12), torch.randn(3, 1, 12)
    assert torch.allclose(full(base, source), low(base, source), atol=1e-5)


def test_boundless_eval_mask_is_hard_and_matches_low_rank():
    torch.manual_seed(2)
    das = BoundlessRotatedSpaceIntervention(10, max_rank=6, init_size=3).eval()
    assert das.size() == 3 and das.mask().tolist() == [1, 1, 1, 0, 0, 0]
    low = LowRankRotatedSpaceIntervention(10, 3).set_rotation(das.basis())
    base, source = torch.randn(2, 1, 10), torch.randn(2, 1, 10)
    assert torch.allclose(das(base, source), low(base, source), atol=1e-5)
    das.train()
    das.set_temperature(1e-3)  # a cold soft mask is the hard one
    assert torch.allclose(das.mask(), torch.tensor([1.0, 1, 1, 0, 0, 0]), atol=1e-4)
    das.set_temperature(10.0)  # a warm one is not
    assert 0.3 < float(das.mask().detach()[3]) < 0.7
    with pytest.raises(ValueError, match="temperature"):
        das.set_temperature(0.0)


def test_fixed_basis_orthonormalizes_and_projects():
    basis = torch.tensor([[2.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    swap = SubspaceInterchange(basis)
    assert torch.allclose(swap.q @ swap.q.T, torch.eye(2), atol=1e-6)
    out = swap(torch.zeros(1, 1, 4), torch.ones(1, 1, 4))
    assert torch.allclose(out, torch.tensor([[[1.0, 1.0, 0.0, 0.0]]]))
    assert torch.equal(SubspaceInterchange(torch.zeros(0, 4))(torch.ones(1, 1, 4), torch.zeros(1, 1, 4)),
                       torch.ones(1, 1, 4))


def test_errors_name_value_and_range():
    with pytest.raises(ValueError, match=r"k = 9 out of range.*between 0 and the hidden size 8"):
        LowRankRotatedSpaceIntervention(8, 9)
    with pytest.raises(ValueError, match="rank 1"):
        orthonormal_rows(torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match="unknown DAS method 'pca'"):
        build_intervention("pca", 8, 2)
    with pytest.raises(ValueError, match="pass sources="):
        LowRankRotatedSpaceIntervention(8, 2)(torch.zeros(1, 1, 8))
    with pytest.raises(ValueError, match="init_size = 7"):
        BoundlessRotatedSpaceIntervention(8, max_rank=4, init_size=7)


def test_wrong_site_size_is_rejected(llama):
    with pytest.raises(ValueError, match="hidden size 8"):
        llama.run(BASES, [PlanItem("L1.resid_post", "l1", LowRankRotatedSpaceIntervention(8, 2))], sources=[SOURCES])
