"""GenerationMonitorCallback and measure_generations: values by hand, a real Trainer, bad input."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from conftest import build_gpt2, build_tokenizer
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

from qdc_trainer import CollapseDetectorCallback, GenerationMonitorCallback, GenerationMonitorConfig, QDCTrainer
from qdc_trainer.metrics import HashingEmbedder, VerifierScorer, compression_ratio, self_bleu, vendi_score
from qdc_trainer.monitor import SAMPLES_FILE, measure_generations

WORDS = "the cat sat on mat a dog ran in park first add to get then multiply by answer is".split()
PROMPTS = ["the cat", "a dog ran", "first add 2 and 3"]


# --------------------------------------------------------------------------- measure_generations by hand


def test_measure_generations_by_hand():
    samples = [["a b", "a b"], ["c d", "e f a"]]
    m = measure_generations(samples, entropy=1.5, scores=[1, 0, 1, 1])
    assert m["per_input/distinct_1"] == pytest.approx((2 / 4 + 5 / 5) / 2)
    # across inputs: sample 0 of each prompt ("a b", "c d"), then sample 1 ("a b", "e f a")
    assert m["across_input/distinct_1"] == pytest.approx((4 / 4 + 4 / 5) / 2)  # "a" repeats in the second
    assert m["per_input/distinct_2"] == pytest.approx((1 / 2 + 3 / 3) / 2)
    assert m["per_input/self_bleu"] == pytest.approx((self_bleu(["a b", "a b"]) + self_bleu(["c d", "e f a"])) / 2)
    assert m["across_input/compression_ratio"] == pytest.approx(
        (compression_ratio(["a b", "c d"]) + compression_ratio(["a b", "e f a"])) / 2
    )
    assert m["length"] == pytest.approx((2 + 2 + 2 + 3) / 4)  # words when no token counts are given
    assert m["repetition"] == 0.0 and m["empty_rate"] == 0.0
    assert m["entropy"] == 1.5 and m["quality"] == pytest.approx(0.75)
    assert "per_input/vendi" not in m


def test_measure_generations_with_embeddings_and_token_counts():
    e = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # prompt 0: identical; prompt 1: orthogonal
    m = measure_generations([["x", "x"], ["y", "z"]], embeddings=e, num_tokens=[[3, 5], [1, 1]])
    assert m["per_input/vendi"] == pytest.approx((1.0 + 2.0) / 2)
    assert m["across_input/vendi"] == pytest.approx((vendi_score(e[[0, 2]]) + vendi_score(e[[1, 3]])) / 2)
    assert m["per_input/cosine_distance"] == pytest.approx((0.0 + 1.0) / 2)
    assert m["length"] == pytest.approx(2.5)


def test_measure_generations_repetition_and_one_prompt():
    m = measure_generations([["a a a a", "b c d"]])
    assert m["repetition"] == pytest.approx((0.5 + 0.0) / 2)  # 3-grams of "a a a a": one of two repeats
    assert "across_input/distinct_1" not in m and m["per_input/distinct_1"] == pytest.approx(4 / 7)


def test_empty_generations_are_undefined_not_diverse():
    m = measure_generations([["", " "], ["a b", "c d"]], num_tokens=[[0, 0], [2, 2]])
    assert m["empty_rate"] == 0.5
    assert m["per_input/distinct_1"] == 1.0  # the empty prompt is left out, not counted as 0 or 1
    assert m["per_input/self_bleu"] == pytest.approx(self_bleu(["a b", "c d"]))
    everything_empty = measure_generations([["", ""], ["", ""]], num_tokens=[[0, 0], [0, 0]])
    assert everything_empty["empty_rate"] == 1.0 and everything_empty["length"] == 0.0
    assert math.isnan(everything_empty["per_input/distinct_2"]) and math.isnan(everything_empty["across_input/self_bleu"])


@pytest.mark.parametrize(
    "samples, kwargs, error",
    [
        ([], {}, ValueError),
        ([["a"]], {}, ValueError),
        ([["a", "b"], ["c"]], {}, ValueError),
        ([["a", 3]], {}, TypeError),
        ([["a", "b"]], {"embeddings": np.zeros((3, 2))}, ValueError),
        ([["a", "b"]], {"scores": [1.0]}, ValueError),
        ([["a", "b"]], {"num_tokens": [[1, 2, 3]]}, ValueError),
    ],
)
def test_measure_generations_rejects_bad_input(samples, kwargs, error):
    with pytest.raises(error):
        measure_generations(samples, **kwargs)


# --------------------------------------------------------------------------- configuration and construction


@pytest.mark.parametrize(
    "field, value",
    [("num_samples", 1), ("max_new_tokens", 0), ("batch_size", 0), ("every_n_steps", 0), ("temperature", 0.0),
     ("top_p", 1.5), ("top_k", -1), ("num_samples", True)],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        GenerationMonitorConfig(**{field: value})


def test_bad_prompts_and_settings():
    with pytest.raises(ValueError, match="at least one probe prompt"):
        GenerationMonitorCallback([])
    with pytest.raises(ValueError, match="probe prompt 1 is empty"):
        GenerationMonitorCallback(["a", "  "])
    with pytest.raises(TypeError, match="list of probe prompts"):
        GenerationMonitorCallback("just one string")
    with pytest.raises(TypeError, match="probe prompt 0"):
        GenerationMonitorCallback([3])
    with pytest.raises(TypeError, match="unknown setting"):
        GenerationMonitorCallback(["a"], num_sample=3)
    monitor = GenerationMonitorCallback(["a"], GenerationMonitorConfig(max_new_tokens=7), num_samples=3)
    assert monitor.config.max_new_tokens == 7 and monitor.config.num_samples == 3


# --------------------------------------------------------------------------- with a real Trainer


def lm_dataset(tokenizer, n=32, seed=0):
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(n)]
    return Dataset.from_dict({"text": texts}).map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])


def training_args(tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=6, logging_steps=2, report_to=[],
        save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, learning_rate=1e-3,
    )
    return TrainingArguments(**{**defaults, **kwargs})


def make_trainer(tokenizer, tmp_path, callbacks, model=None, trainer_cls=QDCTrainer, eval_dataset=None, **kwargs):
    return trainer_cls(
        model=model if model is not None else build_gpt2(tokenizer), args=training_args(tmp_path, **kwargs),
        train_dataset=lm_dataset(tokenizer), eval_dataset=eval_dataset, processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False), callbacks=callbacks,
    )


def gen_logs(trainer):
    return [e for e in trainer.state.log_history if "qdc/gen/length" in e]


def test_monitor_in_a_trainer_logs_saves_and_restores(tokenizer, tmp_path):
    monitor = GenerationMonitorCallback(PROMPTS, every_n_steps=3, num_samples=2, max_new_tokens=6)
    trainer = make_trainer(tokenizer, tmp_path, [monitor])
    trainer.model.activation_checkpointing_enable()
    side = tokenizer.padding_side
    trainer.train()
    logs = gen_logs(trainer)
    assert [e["step"] for e in logs] == [0, 3, 6]  # at the start, then every 3 steps
    expected = {f"qdc/gen/{scope}/{m}" for scope in ("per_input", "across_input")
                for m in ("distinct_1", "distinct_2", "self_bleu", "compression_ratio")}
    expected |= {f"qdc/gen/{m}" for m in ("length", "entropy", "repetition", "empty_rate", "seconds")}
    assert expected <= set(logs[0]) and not any("vendi" in k or "quality" in k for k in logs[0])
    assert all(0 < e["qdc/gen/length"] <= 6 and 0 < e["qdc/gen/entropy"] <= math.log(len(tokenizer)) for e in logs)
    # the Trainer's own training logs were not swallowed by the monitor's log calls on steps 2, 4 and 6
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [2, 4, 6]
    assert trainer.model.training and trainer.model.is_activation_checkpointing and tokenizer.padding_side == side
    rows = [json.loads(line) for line in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert len(rows) == 3 * len(PROMPTS) * 2
    assert {(r["step"], r["prompt_index"], r["sample"]) for r in rows} == {
        (s, p, j) for s in (0, 3, 6) for p in range(3) for j in range(2)
    }
    assert rows[0]["prompt"] == PROMPTS[0] and all(isinstance(r["completion"], str) for r in rows)
    assert monitor.evaluations == 3 and monitor.total_seconds > 0


def test_default_cadence_follows_evaluation_then_logging(tokenizer, tmp_path):
    monitor = GenerationMonitorCallback(PROMPTS[:2], num_samples=2, max_new_tokens=4, at_start=False)
    trainer = make_trainer(tokenizer, tmp_path / "a", [monitor], logging_steps=5)
    trainer.train()
    assert [e["step"] for e in gen_logs(trainer)] == [5]
    monitor = GenerationMonitorCallback(PROMPTS[:2], num_samples=2, max_new_tokens=4, at_start=False)
    trainer = make_trainer(tokenizer, tmp_path / "b", [monitor], eval_dataset=lm_dataset(tokenizer, n=8, seed=1),
                           eval_strategy="steps", eval_steps=2)
    trainer.train()
    assert [e["step"] for e in gen_logs(trainer)] == [2, 4, 6]


def test_monitoring_leaves_training_unchanged(tokenizer, tmp_path):
    """Sampling runs in a forked RNG: with dropout on, the losses and weights match a run without the monitor."""
    runs = []
    for name, callbacks in (("plain", []), ("monitored", [GenerationMonitorCallback(PROMPTS, every_n_steps=2, max_new_tokens=5)])):
        trainer = make_trainer(tokenizer, tmp_path / name, callbacks, model=build_gpt2(tokenizer, seed=3))
        trainer.train()
        runs.append(([e["loss"] for e in trainer.state.log_history if "loss" in e], trainer.model.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_generations_and_entropy_match_a_plain_generate_call(tokenizer, tmp_path):
    model = build_gpt2(tokenizer, seed=1)
    monitor = GenerationMonitorCallback(PROMPTS[:1], num_samples=3, max_new_tokens=8, seed=11, at_start=False)
    trainer = make_trainer(tokenizer, tmp_path, [monitor], model=model, max_steps=1)
    monitor.on_train_begin(trainer.args, trainer.state, trainer.control)
    records = monitor._generate_local(rank=0, world=1, step=4)

    ids = torch.tensor([tokenizer(PROMPTS[0])["input_ids"]])
    torch.manual_seed(11 + 4)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                             max_new_tokens=8, num_return_sequences=3, use_cache=True, pad_token_id=tokenizer.pad_token_id)
    generated = out[:, ids.shape[1]:]
    assert [r["completion"] for r in records] == tokenizer.batch_decode(generated, skip_special_tokens=True)

    # entropy recorded during generation = entropy of a fresh forward pass over the finished sequences
    with torch.no_grad():
        logits = model(out).logits[:, ids.shape[1] - 1 : -1].float()
    logp = torch.log_softmax(logits, -1)
    per_position = -(logp.exp() * logp).sum(-1)
    eos = tokenizer.eos_token_id
    for row, record in enumerate(records):
        tokens = generated[row].tolist()
        active = tokens.index(eos) + 1 if eos in tokens else len(tokens)
        assert record["entropy_count"] == active
        assert record["entropy_sum"] == pytest.approx(float(per_position[row, :active].sum()), rel=1e-4)


def test_activation_checkpointing_does_not_change_the_generations(tokenizer, tmp_path):
    results = []
    for checkpointing in (False, True):
        model = build_gpt2(tokenizer, seed=1)
        if checkpointing:
            model.activation_checkpointing_enable()
        model.train()
        monitor = GenerationMonitorCallback(PROMPTS, num_samples=2, max_new_tokens=8, seed=5, at_start=False)
        trainer = make_trainer(tokenizer, tmp_path / str(checkpointing), [monitor], model=model, max_steps=1)
        monitor.on_train_begin(trainer.args, trainer.state, trainer.control)
        results.append(monitor._generate_local(rank=0, world=1, step=0))
        assert model.training and model.is_activation_checkpointing == checkpointing
    assert results[0] == results[1]


def test_embedder_and_scorer_add_their_keys(tokenizer, tmp_path):
    scorer = VerifierScorer(lambda prompt, completion: len(completion.split()) > 2)
    monitor = GenerationMonitorCallback(PROMPTS, num_samples=2, max_new_tokens=5, every_n_steps=100,
                                        embedder=HashingEmbedder(n_features=64), scorer=scorer)
    trainer = make_trainer(tokenizer, tmp_path, [monitor], max_steps=1)
    trainer.train()
    (log,) = gen_logs(trainer)
    assert {"qdc/gen/per_input/vendi", "qdc/gen/across_input/cosine_distance", "qdc/gen/quality"} <= set(log)
    rows = [json.loads(line) for line in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert log["qdc/gen/quality"] == pytest.approx(np.mean([len(r["completion"].split()) > 2 for r in rows]))
    assert 1.0 <= log["qdc/gen/per_input/vendi"] <= 2.0


def test_chat_prompts_use_the_chat_template(tmp_path):
    tok = build_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}answer is{% endif %}"
    monitor = GenerationMonitorCallback([[{"role": "user", "content": "the cat"}], "a dog"], num_samples=2, max_new_tokens=3)
    trainer = make_trainer(tok, tmp_path, [monitor], max_steps=1)
    monitor.on_train_begin(trainer.args, trainer.state, trainer.control)
    assert monitor._encoded[0] == tok("the cat answer is", add_special_tokens=False)["input_ids"]


def test_too_long_prompts_keep_their_last_tokens(tokenizer, tmp_path, caplog):
    long_prompt = " ".join(["the cat sat on the mat"] * 20)  # 120 tokens, context 64
    monitor = GenerationMonitorCallback([long_prompt, "a dog"], num_samples=2, max_new_tokens=16)
    trainer = make_trainer(tokenizer, tmp_path, [monitor], max_steps=1)
    with caplog.at_level(logging.WARNING, logger="qdc_trainer.monitor"):
        trainer.train()
    assert "exceed the model's context (64) minus max_new_tokens (16)" in caplog.text
    assert len(monitor._encoded[0]) == 48 and monitor._encoded[0] == tokenizer(long_prompt)["input_ids"][-48:]
    assert gen_logs(trainer)[0]["qdc/gen/length"] > 0

    too_many = GenerationMonitorCallback(["a dog"], max_new_tokens=64)
    trainer = make_trainer(tokenizer, tmp_path / "b", [too_many], max_steps=1)
    with pytest.raises(ValueError, match="leaves no room"):
        trainer.train()


def test_empty_generations_are_logged_as_such_and_the_detector_skips_them(tokenizer, tmp_path):
    eos = tokenizer.eos_token_id
    monitor = GenerationMonitorCallback(PROMPTS, num_samples=2, max_new_tokens=1, every_n_steps=2,
                                        generation_kwargs={"forced_eos_token_id": eos})
    detector = CollapseDetectorCallback(watch={"qdc/gen/per_input/distinct_2": "decrease"})
    trainer = make_trainer(tokenizer, tmp_path, [monitor, detector], max_steps=4)
    trainer.train()
    logs = gen_logs(trainer)
    assert all(e["qdc/gen/empty_rate"] == 1.0 and e["qdc/gen/length"] == 0.0 for e in logs)
    assert all(math.isnan(e["qdc/gen/per_input/distinct_2"]) for e in logs)
    watched = detector.detectors["qdc/gen/per_input/distinct_2"]
    assert watched.skipped == len(logs) and watched.baseline is None and detector.level == 0


def test_the_monitor_needs_a_trainer_and_a_tokenizer(tokenizer, tmp_path):
    monitor = GenerationMonitorCallback(PROMPTS)
    trainer = Trainer(model=build_gpt2(tokenizer), args=training_args(tmp_path, max_steps=1), train_dataset=lm_dataset(tokenizer),
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False), callbacks=[monitor])
    with pytest.raises(ValueError, match="needs the trainer"):
        trainer.train()
    monitor.bind(trainer)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        trainer.train()
