"""Path patching against a hand-written two-pass reference (plain ``register_forward_pre_hook``s on
the output projections, nothing from the workbench's hook machinery), and direct effects against
the head's write added to the final residual by hand."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from analyses.path_patching import direct_effects, path_patch

BASE, SOURCE = "Paris is in the country of", "Rome is in the country of"


def ids(hm, text):
    return hm.tokenizer(text, return_tensors="pt")["input_ids"]


def logit_diff(hm, logits):
    t, f = (hm.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in ("France", "Italy"))
    return float(logits[0, -1, t] - logits[0, -1, f])


@torch.no_grad()
def z_of_every_layer(hm, input_ids):
    """Each layer's o_proj input (1, T, W), read with plain hooks."""
    found, handles = {}, []
    for l, layer in enumerate(hm.model.model.layers):
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(
            lambda m, args, l=l: found.__setitem__(l, args[0].detach().clone())))
    hm.model(input_ids)
    for h in handles:
        h.remove()
    return found


@torch.no_grad()
def reference(hm, sender, receiver):
    """The IOI recipe by hand. sender/receiver: (layer, head); receiver None = the logits."""
    base, source = ids(hm, BASE), ids(hm, SOURCE)
    clean, dirty = z_of_every_layer(hm, base), z_of_every_layer(hm, source)
    hd = hm.model.config.hidden_size // hm.model.config.num_attention_heads
    cols = lambda h: slice(h * hd, (h + 1) * hd)  # noqa: E731
    recorded = {}

    def pass_one(l):
        def hook(m, args):
            z = args[0].clone()
            if receiver is not None and l == receiver[0]:
                recorded["z"] = z[..., cols(receiver[1])].clone()  # the receiver is not frozen
            keep = z.clone()
            z[:] = clean[l]  # freeze every head at its base value ...
            if receiver is not None and l == receiver[0]:
                z[..., cols(receiver[1])] = keep[..., cols(receiver[1])]  # ... but the receiver
            if l == sender[0]:
                z[..., cols(sender[1])] = dirty[l][..., cols(sender[1])]  # the sender from the source
            return (z,)
        return hook

    handles = [layer.self_attn.o_proj.register_forward_pre_hook(pass_one(l))
               for l, layer in enumerate(hm.model.model.layers)]
    logits = hm.model(base).logits
    for h in handles:
        h.remove()
    if receiver is None:
        return logit_diff(hm, logits)

    def pass_two(m, args):
        z = args[0].clone()
        z[..., cols(receiver[1])] = recorded["z"]
        return (z,)
    handle = hm.model.model.layers[receiver[0]].self_attn.o_proj.register_forward_pre_hook(pass_two)
    logits = hm.model(base).logits
    handle.remove()
    return logit_diff(hm, logits)


def test_sender_to_receiver_head_equals_the_hand_written_two_pass_reference(one_thread):
    hm = tiny_model("llama")
    df = path_patch(hm, BASE, SOURCE, receivers=["L2.head3.z"], target="France", foil="Italy",
                    senders=["L0.head1.z", "L1.head0.z", "L1.head2.z"])
    for (layer, head), value in zip([(0, 1), (1, 0), (1, 2)], df["value"]):
        expected = reference(hm, (layer, head), (2, 3))
        assert value == pytest.approx(expected, abs=1e-5)
    assert df["value"].sub(df["base_value"]).abs().max() > 1e-4  # the paths carry something


def test_sender_to_logits_equals_the_reference_and_covers_every_head(one_thread):
    hm = tiny_model("llama")
    df = path_patch(hm, BASE, SOURCE, "logits", target="France", foil="Italy", batch_size=5)
    assert len(df) == hm.n_layers * hm.layout.n_heads
    for layer, head in [(0, 0), (1, 3), (2, 2)]:
        value = df[(df.layer == layer) & (df["head"] == head)]["value"].iloc[0]
        assert value == pytest.approx(reference(hm, (layer, head), None), abs=1e-5)


def test_direct_effect_is_the_heads_write_into_the_final_residual(one_thread):
    hm = tiny_model("llama")
    df = direct_effects(hm, BASE, SOURCE, target="France", foil="Italy")
    base, source = ids(hm, BASE), ids(hm, SOURCE)
    clean, dirty = z_of_every_layer(hm, base), z_of_every_layer(hm, source)
    with torch.no_grad():
        seen = {}
        handle = hm.model.model.norm.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0].clone()))
        hm.model(base)
        handle.remove()
        resid = seen["x"]  # (1, T, d): the final residual, before the final norm
        for layer, head in [(0, 2), (2, 1)]:
            W = hm.model.model.layers[layer].self_attn.o_proj.weight[:, head * 8:(head + 1) * 8]
            delta = (dirty[layer] - clean[layer])[..., head * 8:(head + 1) * 8] @ W.T  # (1, T, d)
            logits = hm.model.lm_head(hm.model.model.norm(resid + delta))
            value = df[(df.layer == layer) & (df["head"] == head)]["value"].iloc[0]
            assert value == pytest.approx(logit_diff(hm, logits), abs=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(receivers=["L1.head0.z"], senders=["L2.head0.z"]), "upstream"),
    (dict(receivers=["L1.mlp_act"]), "receivers are one of"),
    (dict(receivers=[]), "receivers is empty"),
    (dict(senders=["L0.resid_pre"]), "senders are single heads"),
    (dict(receivers=["L0.head0.z"]), "no head lies upstream"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        path_patch(tiny_model("llama"), BASE, SOURCE, target="France", foil="Italy", **kwargs)


def test_bfloat16_runs_agree_with_float32(one_thread):
    from analyses.attribution import attribution_patching

    full, half = tiny_model("llama"), tiny_model("llama")
    half.model.to(torch.bfloat16)
    a = direct_effects(full, BASE, SOURCE, target="France", foil="Italy")
    b = direct_effects(half, BASE, SOURCE, target="France", foil="Italy")
    assert (a["value"] - b["value"]).abs().max() < 0.005  # effects reach ~0.04
    pa, _ = attribution_patching(full, BASE, SOURCE, target="France", foil="Italy", heads=False)
    pb, _ = attribution_patching(half, BASE, SOURCE, target="France", foil="Italy", heads=False)
    assert (pa["attribution"] - pb["attribution"]).abs().max() < 0.01  # estimates reach ~0.08
    assert pb["attribution"].abs().max() > 0
