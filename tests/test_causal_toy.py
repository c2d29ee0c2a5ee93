"""Toy networks: interchange by hook equals recomputation; full-vector alignment where the network
computes the variable gives IIA 1.0; planted alignments (positions, neurons) are recovered; DBM masks."""

from __future__ import annotations

import pytest
import torch

from causal.counterfactuals import counterfactual_examples
from causal.featurizers import DifferentiableMask, Featurizer, build
from causal.tasks import hierarchical_equality
from causal.toy import PairNetwork, PlantedBits, interchange, planted_bits_model, train_toy
from causal.toy_align import fit, localist_search, toy_iia, toy_search, toy_tensors


@pytest.fixture(scope="module")
def pair_net(one_thread):
    model = hierarchical_equality(n_objects=20)
    net = PairNetwork(n_objects=20, hidden=16, seed=0)
    accuracy = train_toy(net, model, steps=600, batch_size=128, pool=4000)
    assert accuracy == 1.0  # the network solves the task: IIA is then about the alignment alone
    return net, model


def test_hook_interchange_equals_recomputation(pair_net):
    net, model = pair_net
    table = counterfactual_examples(model, ["WX"], n=64, seed=3)
    base, source, _ = toy_tensors(net, table)
    states = net.states(source)[0][:, [0]]  # (B, 1, h)
    with interchange(net, 0, [0], build("full", 16), states):
        hooked = net(base)
    h = net.layers[0](net.embed(base)).clone()  # by hand: layer 0, swap position 0, the rest of the net
    h[:, 0] = net.layers[0](net.embed(source))[:, 0]
    by_hand = net.head(net.layers[1](h))
    assert torch.equal(hooked, by_hand)
    assert not net.layers[0]._forward_hooks  # the hook is gone


def test_full_vector_where_the_variable_is_computed_gives_iia_one_and_is_recovered(pair_net):
    net, model = pair_net
    table = toy_search(net, model, ["WX", "YZ"], [Featurizer("full")], n_train=20, n_test=400, seed=1)
    cell = table.set_index(["variable", "layer", "position"])["iia"]
    assert cell[("WX", 0, 0)] == 1.0 and cell[("YZ", 0, 1)] == 1.0
    assert cell[("WX", 0, 1)] < 0.65 and cell[("YZ", 0, 0)] < 0.65  # the other pair: about chance
    best = table.loc[table.groupby("variable")["iia"].idxmax()].set_index("variable")
    assert (best.loc["WX", "layer"], best.loc["WX", "position"]) == (0, 0)
    assert (best.loc["YZ", "layer"], best.loc["YZ", "position"]) == (0, 1)


@pytest.fixture(scope="module")
def planted():
    net, model = PlantedBits(d=12, planted=(2, 5, 9), other=(0, 7, 10)), planted_bits_model()
    table = counterfactual_examples(model, ["A"], n=600, seed=0, balanced=False)
    return net, toy_tensors(net, table.iloc[:400]), toy_tensors(net, table.iloc[400:])


def test_dbm_mask_recovers_the_planted_neurons(planted, one_thread):
    net, train, test = planted
    torch.manual_seed(0)
    mask = DifferentiableMask(12)
    losses = fit(net, 0, [0], mask, train, epochs=15, batch_size=32, lr=0.1, sparsity=0.5)
    assert mask.selected() == [2, 5, 9]
    assert toy_iia(net, 0, [0], mask, test) == 1.0 and losses[-1] < losses[0]
    no_penalty = DifferentiableMask(12)  # without the sparsity term the mask keeps irrelevant noise dims
    fit(net, 0, [0], no_penalty, train, epochs=3, batch_size=32, lr=0.1, sparsity=0.0)
    kept = set(no_penalty.selected())
    assert kept > {2, 5, 9} and not kept & {0, 7, 10}


def test_das_subspace_lies_in_the_planted_neurons_and_localist_single_neurons_fall_short(planted, one_thread):
    net, train, test = planted
    torch.manual_seed(0)
    das = build("das", 12, k=3)
    fit(net, 0, [0], das, train, epochs=10, batch_size=32, lr=0.05)
    basis = das.basis()  # (3, 12), orthonormal rows
    inside = basis[:, [2, 5, 9]].pow(2).sum() / basis.pow(2).sum()
    assert inside > 0.99 and toy_iia(net, 0, [0], das, test) == 1.0
    assert toy_iia(net, 0, [0], build("full", 12), test) < 0.3  # the whole vector also moves b
    found = localist_search(net, 0, [0], train, test, sizes=(1,))
    assert found["iia"] < 0.6 and len(found["dims"]) == 1
