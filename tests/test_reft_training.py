"""ReFT training: loss falls, targets are reproduced, R stays orthonormal, checkpoints resume,
the HF Trainer integration works, and the classification path learns."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_model
from reft import (ReftConfig, ReftForClassification, TrainConfig, generate, get_reft_model, tokenize_classification,
                  tokenize_pairs, train)
from reft.interventions import LoReFT
from reft.train import autocast_for, lr_at
from test_reft_model import learnable_llama

PAIRS = [("the cat sat on the mat", "Paris Rome ."), ("a dog", "great movie")]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread (the machine's cores are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rows_for(hm, pairs=PAIRS):
    return tokenize_pairs(hm.tokenizer, pairs, chat_template=False)


@pytest.mark.parametrize("kind", ["loreft", "direft", "consreft"])
def test_loss_falls_and_targets_are_reproduced(kind):
    hm = learnable_llama()
    torch.manual_seed(0)
    pairs = PAIRS[:1] if kind == "consreft" else PAIRS  # ConsReFT is input-free: one prompt only
    reft = get_reft_model(hm, ReftConfig(layers=(0, 1, 2), rank=4, kind=kind, positions="f1+l1"))
    before = generate(reft, [p for p, _ in pairs], max_new_tokens=4, chat_template=False)
    lr = 5e-2 if kind == "consreft" else 3e-2
    result = train(reft, rows_for(hm, pairs), TrainConfig(epochs=60, batch_size=2, lr=lr, warmup_ratio=0,
                                                         progress=False))
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses[-1] < 0.5 * losses[0]
    after = generate(reft, [p for p, _ in pairs], max_new_tokens=4, chat_template=False)
    assert after == [r for _, r in pairs] and before != after


def test_r_stays_orthonormal_after_training():
    hm = learnable_llama()
    reft = get_reft_model(hm, ReftConfig(layers=(1,), rank=6, positions="f1+l1"))
    # weight decay on R's stored tensor would zero R (torch's Householder map); train() must skip it
    train(reft, rows_for(hm), TrainConfig(epochs=30, batch_size=2, lr=5e-2, weight_decay=0.1, progress=False))
    edits = [m for m in reft.modules() if isinstance(m, LoReFT)]
    assert len(edits) == 2
    for edit in edits:
        R = edit.rotation.weight
        assert edit.rotation.max_orthonormality_error() < 1e-5
        assert not torch.allclose(R, edit.learned_source.weight)  # it trained: W is not R


def test_schedule_and_precision_helpers():
    assert [round(lr_at(s, 10, 2, 1.0), 2) for s in (0, 1, 5, 9)] == [0.5, 1.0, 0.62, 0.12]
    context, scaler = autocast_for(torch.device("cpu"), "auto")
    assert scaler is None and type(context).__name__ == "nullcontext"  # CPU: fp32 unless asked
    with pytest.raises(ValueError, match="mixed_precision 'fp8'"):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        TrainConfig(batch_size=0)


def test_gradient_accumulation_matches_a_bigger_batch():
    """Two micro-batches of 1 accumulate to the gradient of one batch of 2 (equal response lengths)."""
    hm = learnable_llama()
    pairs = [("the cat sat", "Paris Rome"), ("a dog was", "great movie")]
    results = []
    for batch_size, accum in ((2, 1), (1, 2)):
        torch.manual_seed(0)
        reft = get_reft_model(hm, ReftConfig(layers=(1,), rank=2, positions="l1"))
        train(reft, rows_for(hm, pairs), TrainConfig(epochs=3, batch_size=batch_size, grad_accum=accum, lr=1e-2,
                                                    max_grad_norm=None, progress=False, warmup_ratio=0))
        results.append(torch.cat([p.detach().flatten() for p in reft.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-5)


def test_checkpoints_resume_to_the_same_weights(tmp_path):
    hm = learnable_llama()
    config = dict(batch_size=1, lr=1e-2, progress=False, save_every=3)

    def fresh():
        torch.manual_seed(0)
        return get_reft_model(hm, ReftConfig(layers=(1, 2), rank=2, positions="f1+l1"))

    straight = fresh()
    train(straight, rows_for(hm), TrainConfig(epochs=4, output_dir=str(tmp_path / "a"), **config))
    interrupted = fresh()  # crashes during step 4, after the checkpoint at step 3; a new run resumes

    def crash(_model):
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(interrupted, rows_for(hm), TrainConfig(epochs=4, eval_every=4, output_dir=str(tmp_path / "b"), **config),
              eval_fn=crash)
    state = json.loads((tmp_path / "b" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 3
    resumed = fresh()
    result = train(resumed, rows_for(hm), TrainConfig(epochs=4, output_dir=str(tmp_path / "b"), **config))
    assert result.steps == 8
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    files = {p.name for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert {"interventions.safetensors", "reft_config.json", "train_config.json", "history.json",
            "optimizer.safetensors", "optimizer.json", "trainer_state.json"} <= files
    assert not any(name.endswith((".pt", ".bin", ".pth", ".pkl")) for name in files)  # no pickle


def test_hf_trainer_trains_saves_and_resumes(tmp_path):
    from transformers import TrainingArguments

    from reft.hf_trainer import ReftTrainer
    from reft.saving import read_config

    hm = learnable_llama()
    torch.manual_seed(0)
    reft = get_reft_model(hm, ReftConfig(layers=(0, 1, 2), rank=4, positions="f1+l1"))
    args = TrainingArguments(str(tmp_path), max_steps=40, per_device_train_batch_size=2, learning_rate=2e-2,
                             report_to=[], save_steps=20, logging_steps=10, use_cpu=True, disable_tqdm=True,
                             lr_scheduler_type="constant")
    trainer = ReftTrainer(model=reft, args=args, train_dataset=rows_for(hm))
    decayed = trainer.get_decay_parameter_names(reft)
    assert decayed and not any(".rotation." in name for name in decayed)  # decay would zero R
    out = trainer.train()
    logs = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert logs[-1] < 0.6 * logs[0] and out.global_step == 40
    assert generate(reft, [p for p, _ in PAIRS], max_new_tokens=4, chat_template=False) == [r for _, r in PAIRS]
    checkpoint = tmp_path / "checkpoint-20"
    assert read_config(checkpoint)["config"]["layers"] == [0, 1, 2]
    torch.manual_seed(1)
    again = get_reft_model(hm, ReftConfig(layers=(0, 1, 2), rank=4, positions="f1+l1"))
    ReftTrainer(model=again, args=args, train_dataset=rows_for(hm)).train(resume_from_checkpoint=str(checkpoint))
    for a, b in zip(reft.state_dict().values(), again.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_classification_learns(family):
    hm = tiny_model(family)
    torch.manual_seed(0)
    clf = ReftForClassification(get_reft_model(hm, ReftConfig(layers=(1, 2), rank=4, positions="f1+l1")), 2)
    texts = ["I loved the movie", "it was great !", "a great cat", "I hated the movie", "it was awful .", "a bad dog"]
    if family == "bert":  # pooled at the first token: in a random tiny BERT it barely sees the others
        texts = ["great movie", "good movie", "loved it", "bad movie", "awful movie", "hated it"]
    labels = [1, 1, 1, 0, 0, 0]
    rows = tokenize_classification(hm.tokenizer, texts, labels)
    result = train(clf, rows, TrainConfig(epochs=60, batch_size=6, lr=2e-2, progress=False))
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses[-1] < 0.2 * losses[0]
    batch = hm.tokenize(texts)
    assert clf.predict(**batch).tolist() == labels
    assert clf.num_trainable_parameters() == 2 * 2 * (2 * 4 * 32 + 4) + 32 * 2 + 2


def test_the_mlp_head_learns_counts_its_parameters_and_reloads_exactly(tmp_path):
    from reft.loading import load_reft
    hm = tiny_model("bert")
    torch.manual_seed(0)
    clf = ReftForClassification(get_reft_model(hm, ReftConfig(layers=(1, 2), rank=4, positions="f1")), 2,
                                head="mlp", dropout=0.1)
    texts, labels = ["great movie", "good movie", "loved it", "bad movie", "awful movie", "hated it"], [1, 1, 1, 0, 0, 0]
    result = train(clf, tokenize_classification(hm.tokenizer, texts, labels),
                   TrainConfig(epochs=60, batch_size=6, lr=2e-2, progress=False))
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses[-1] < 0.2 * losses[0]
    d = 32
    assert clf.num_head_parameters() == d * d + d + d * 2 + 2  # dense + out, as BERT's classification head
    assert clf.num_trainable_parameters() == 2 * (2 * 4 * d + 4) + clf.num_head_parameters()
    clf.eval()
    batch = hm.tokenize(texts)
    want = clf(**batch).logits
    assert clf.predict(**batch).tolist() == labels
    clf.save(tmp_path / "clf")
    back = load_reft(tmp_path / "clf", tiny_model("bert"))
    assert back.head_kind == "mlp" and isinstance(back.head, torch.nn.Sequential)
    assert torch.equal(back(**batch).logits, want)  # bit-exact after the round trip
    with pytest.raises(ValueError, match=r"head 'deep'.*'linear', 'mlp'"):
        ReftForClassification(clf.reft, 2, head="deep")
