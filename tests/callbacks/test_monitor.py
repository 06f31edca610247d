"""GenerationMonitorCallback and measure_generations: values by hand, a real Trainer, bad input."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from helpers import build_gpt2, build_tokenizer, cpu_training_args, random_text_dataset, tokenized
from transformers import DataCollatorForLanguageModeling, Trainer

from qdc_trainer import CollapseDetectorCallback, GenerationMonitorCallback, GenerationMonitorConfig, QDCTrainer
from qdc_trainer.callbacks.monitor import PREFIX, SAMPLES_FILE, measure_generations
from qdc_trainer.metrics import HashingEmbedder, VerifierScorer, compression_ratio, self_bleu, vendi_score

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
    assert math.isnan(everything_empty["per_input/distinct_2"]) and math.isnan(
        everything_empty["across_input/self_bleu"]
    )


def test_zero_embedding_rows_are_left_out_of_the_embedding_measures():
    # the reproduction: an empty sample is an all-zero row under HashingEmbedder
    texts = ["", "a b", "c d", "e f"]
    m = measure_generations([texts[:2], texts[2:]], embeddings=HashingEmbedder()(texts))
    assert m["per_input/vendi"] == pytest.approx((1.0 + 2.0) / 2)  # prompt 0: the one non-empty row; prompt 1: two
    assert m["per_input/cosine_distance"] == pytest.approx(1.0)  # prompt 0 has one row left: NaN, left out
    # by hand: rows [0 0], [1 0] | [1 0], [0 1]
    e = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    m = measure_generations([["", "x"], ["y", "z"]], embeddings=e)
    assert m["per_input/vendi"] == pytest.approx(1.5) and m["per_input/cosine_distance"] == pytest.approx(1.0)
    # across inputs: sample 0 = ([0 0], [1 0]) -> vendi 1, cosine NaN; sample 1 = ([1 0], [0 1]) -> vendi 2, cosine 1
    assert m["across_input/vendi"] == pytest.approx(1.5) and m["across_input/cosine_distance"] == pytest.approx(1.0)
    nothing = measure_generations([["", ""], ["", ""]], embeddings=np.zeros((4, 3)))
    assert math.isnan(nothing["per_input/vendi"]) and math.isnan(nothing["across_input/cosine_distance"])
    assert nothing["empty_rate"] == 1.0
    one_prompt = measure_generations([["", "x", "y"]], embeddings=np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    assert one_prompt["per_input/vendi"] == pytest.approx(2.0) and one_prompt[
        "per_input/cosine_distance"
    ] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "samples, kwargs, error",
    [
        ([], {}, ValueError),
        ([["a"]], {}, ValueError),
        ([["a", "b"], ["c"]], {}, ValueError),
        ([["a", 3]], {}, TypeError),
        ([["a", "b"]], {"embeddings": np.zeros((3, 2))}, ValueError),
        ([["a", "b"]], {"embeddings": np.array([[1.0, 0.0], [np.nan, np.nan]])}, ValueError),
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
    [
        ("num_samples", 1),
        ("max_new_tokens", 0),
        ("batch_size", 0),
        ("every_n_steps", 0),
        ("temperature", 0.0),
        ("top_p", 1.5),
        ("top_k", -1),
        ("num_samples", True),
    ],
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
    with pytest.raises(TypeError, match=r"unknown GenerationMonitorCallback option\(s\) \['num_sample'\]"):
        GenerationMonitorCallback(["a"], num_sample=3)
    with pytest.raises(TypeError, match="config must be a GenerationMonitorConfig, got dict"):
        GenerationMonitorCallback(["a"], {"num_samples": 3})


def test_the_keyword_spelling_of_the_settings_warns_and_still_works():
    config = GenerationMonitorConfig(max_new_tokens=7)
    assert GenerationMonitorCallback(["a"], config=config).config == config
    with pytest.warns(
        FutureWarning,
        match=r"GenerationMonitorCallback\(num_samples=3\).*config=dataclasses.replace\(config, num_samples=3\)",
    ) as caught:
        monitor = GenerationMonitorCallback(["a"], config, num_samples=3)
    assert caught[0].filename == __file__  # the warning names the caller's line
    assert monitor.config == GenerationMonitorConfig(max_new_tokens=7, num_samples=3) and config.num_samples == 4
    with pytest.warns(FutureWarning, match=r"config=GenerationMonitorConfig\(num_samples=3, at_start=False\)"):
        monitor = GenerationMonitorCallback(["a"], num_samples=3, at_start=False)
    assert monitor.config == GenerationMonitorConfig(num_samples=3, at_start=False)


# --------------------------------------------------------------------------- with a real Trainer


def training_args(tmp_path, **kwargs):
    return cpu_training_args(tmp_path, **{"max_steps": 6, "logging_steps": 2, **kwargs})


def make_trainer(tokenizer, tmp_path, callbacks, model=None, trainer_cls=QDCTrainer, eval_dataset=None, **kwargs):
    return trainer_cls(
        model=model if model is not None else build_gpt2(tokenizer),
        args=training_args(tmp_path, **kwargs),
        train_dataset=tokenized(random_text_dataset(32, lengths=(3, 9)), tokenizer),
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=callbacks,
    )


def gen_logs(trainer):
    return [e for e in trainer.state.log_history if "qdc/gen/length" in e]


def test_monitor_in_a_trainer_logs_saves_and_restores(tokenizer, tmp_path):
    monitor = GenerationMonitorCallback(
        PROMPTS, config=GenerationMonitorConfig(every_n_steps=3, num_samples=2, max_new_tokens=6)
    )
    trainer = make_trainer(tokenizer, tmp_path, [monitor])
    trainer.model.activation_checkpointing_enable()
    side = tokenizer.padding_side
    trainer.train()
    logs = gen_logs(trainer)
    assert [e["step"] for e in logs] == [0, 3, 6]  # at the start, then every 3 steps
    expected = {
        f"qdc/gen/{scope}/{m}"
        for scope in ("per_input", "across_input")
        for m in ("distinct_1", "distinct_2", "self_bleu", "compression_ratio")
    }
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
    monitor = GenerationMonitorCallback(
        PROMPTS[:2], config=GenerationMonitorConfig(num_samples=2, max_new_tokens=4, at_start=False)
    )
    trainer = make_trainer(tokenizer, tmp_path / "a", [monitor], logging_steps=5)
    trainer.train()
    assert [e["step"] for e in gen_logs(trainer)] == [5]
    monitor = GenerationMonitorCallback(
        PROMPTS[:2], config=GenerationMonitorConfig(num_samples=2, max_new_tokens=4, at_start=False)
    )
    trainer = make_trainer(
        tokenizer,
        tmp_path / "b",
        [monitor],
        eval_dataset=tokenized(random_text_dataset(8, seed=1, lengths=(3, 9)), tokenizer),
        eval_strategy="steps",
        eval_steps=2,
    )
    trainer.train()
    assert [e["step"] for e in gen_logs(trainer)] == [2, 4, 6]


def test_monitoring_leaves_training_unchanged(tokenizer, tmp_path):
    """Sampling runs in a forked RNG: with dropout on, the losses and weights match a run without the monitor."""
    runs = []
    for name, callbacks in (
        ("plain", []),
        (
            "monitored",
            [GenerationMonitorCallback(PROMPTS, config=GenerationMonitorConfig(every_n_steps=2, max_new_tokens=5))],
        ),
    ):
        trainer = make_trainer(tokenizer, tmp_path / name, callbacks, model=build_gpt2(tokenizer, seed=3))
        trainer.train()
        runs.append(([e["loss"] for e in trainer.state.log_history if "loss" in e], trainer.model.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_generations_and_entropy_match_a_plain_generate_call(tokenizer, tmp_path):
    model = build_gpt2(tokenizer, seed=1)
    monitor = GenerationMonitorCallback(
        PROMPTS[:1], config=GenerationMonitorConfig(num_samples=3, max_new_tokens=8, seed=11, at_start=False)
    )
    trainer = make_trainer(tokenizer, tmp_path, [monitor], model=model, max_steps=1)
    monitor.on_train_begin(trainer.args, trainer.state, trainer.control)
    records = monitor._generate_local(rank=0, world=1, step=4)

    ids = torch.tensor([tokenizer(PROMPTS[0])["input_ids"]])
    torch.manual_seed(11 + 4)
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            top_k=0,
            top_p=1.0,
            temperature=1.0,
            max_new_tokens=8,
            num_return_sequences=3,
            use_cache=True,
            pad_token_id=tokenizer.pad_token_id,
        )
    generated = out[:, ids.shape[1] :]
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
        monitor = GenerationMonitorCallback(
            PROMPTS, config=GenerationMonitorConfig(num_samples=2, max_new_tokens=8, seed=5, at_start=False)
        )
        trainer = make_trainer(tokenizer, tmp_path / str(checkpointing), [monitor], model=model, max_steps=1)
        monitor.on_train_begin(trainer.args, trainer.state, trainer.control)
        results.append(monitor._generate_local(rank=0, world=1, step=0))
        assert model.training and model.is_activation_checkpointing == checkpointing
    assert results[0] == results[1]


def test_embedder_and_scorer_add_their_keys(tokenizer, tmp_path):
    scorer = VerifierScorer(lambda prompt, completion: len(completion.split()) > 2)
    monitor = GenerationMonitorCallback(
        PROMPTS,
        embedder=HashingEmbedder(n_features=64),
        scorer=scorer,
        config=GenerationMonitorConfig(num_samples=2, max_new_tokens=5, every_n_steps=100),
    )
    trainer = make_trainer(tokenizer, tmp_path, [monitor], max_steps=1)
    trainer.train()
    (log,) = gen_logs(trainer)
    assert {"qdc/gen/per_input/vendi", "qdc/gen/across_input/cosine_distance", "qdc/gen/quality"} <= set(log)
    rows = [json.loads(line) for line in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert log["qdc/gen/quality"] == pytest.approx(np.mean([len(r["completion"].split()) > 2 for r in rows]))
    assert 1.0 <= log["qdc/gen/per_input/vendi"] <= 2.0


def test_chat_prompts_use_the_chat_template(tmp_path):
    tok = build_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}answer is{% endif %}"
    )
    monitor = GenerationMonitorCallback(
        [[{"role": "user", "content": "the cat"}], "a dog"],
        config=GenerationMonitorConfig(num_samples=2, max_new_tokens=3),
    )
    trainer = make_trainer(tok, tmp_path, [monitor], max_steps=1)
    monitor.on_train_begin(trainer.args, trainer.state, trainer.control)
    assert monitor._encoded[0] == tok("the cat answer is", add_special_tokens=False)["input_ids"]


def test_too_long_prompts_keep_their_last_tokens(tokenizer, tmp_path, caplog):
    long_prompt = " ".join(["the cat sat on the mat"] * 20)  # 120 tokens, context 64
    monitor = GenerationMonitorCallback(
        [long_prompt, "a dog"], config=GenerationMonitorConfig(num_samples=2, max_new_tokens=16)
    )
    trainer = make_trainer(tokenizer, tmp_path, [monitor], max_steps=1)
    with caplog.at_level(logging.WARNING, logger="qdc_trainer.callbacks.monitor"):
        trainer.train()
    assert "exceed the model's context (64) minus max_new_tokens (16)" in caplog.text
    assert len(monitor._encoded[0]) == 48 and monitor._encoded[0] == tokenizer(long_prompt)["input_ids"][-48:]
    assert gen_logs(trainer)[0]["qdc/gen/length"] > 0

    too_many = GenerationMonitorCallback(["a dog"], config=GenerationMonitorConfig(max_new_tokens=64))
    trainer = make_trainer(tokenizer, tmp_path / "b", [too_many], max_steps=1)
    with pytest.raises(ValueError, match="leaves no room"):
        trainer.train()


def test_empty_generations_are_logged_as_such_and_the_detector_skips_them(tokenizer, tmp_path):
    eos = tokenizer.eos_token_id
    monitor = GenerationMonitorCallback(
        PROMPTS,
        config=GenerationMonitorConfig(
            num_samples=2, max_new_tokens=1, every_n_steps=2, generation_kwargs={"forced_eos_token_id": eos}
        ),
    )
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
    trainer = Trainer(
        model=build_gpt2(tokenizer),
        args=training_args(tmp_path, max_steps=1),
        train_dataset=tokenized(random_text_dataset(32, lengths=(3, 9)), tokenizer),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[monitor],
    )
    with pytest.raises(ValueError, match="needs the trainer"):
        trainer.train()
    monitor.bind(trainer)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        trainer.train()


# --------------------------------------------------------------------------- failures never stop training


def test_empty_samples_with_a_lexical_embedder_do_not_stop_training(tokenizer, tmp_path):
    """Every sample is empty: HashingEmbedder gives all-zero rows; vendi and cosine are NaN, the run goes on."""
    eos = tokenizer.eos_token_id
    monitor = GenerationMonitorCallback(
        PROMPTS,
        embedder=HashingEmbedder(n_features=64),
        config=GenerationMonitorConfig(
            num_samples=2, max_new_tokens=1, every_n_steps=2, generation_kwargs={"forced_eos_token_id": eos}
        ),
    )
    trainer = make_trainer(tokenizer, tmp_path, [monitor], max_steps=2)
    trainer.train()
    logs = gen_logs(trainer)
    assert [e["step"] for e in logs] == [0, 2] and trainer.state.global_step == 2
    assert all(
        math.isnan(e[f"qdc/gen/{s}/{m}"])
        for e in logs
        for s in ("per_input", "across_input")
        for m in ("vendi", "cosine_distance")
    )
    assert all(e["qdc/gen/empty_rate"] == 1.0 for e in logs) and monitor.failures == {}
    assert len((tmp_path / SAMPLES_FILE).read_text().splitlines()) == 2 * len(PROMPTS) * 2


def failing(message, calls=None):
    def fn(*args, **kwargs):
        if calls is not None:
            calls.append(1)
        raise RuntimeError(message)

    return fn


def test_a_failing_embedder_and_scorer_give_nan_and_one_warning_each(tokenizer, tmp_path, caplog):
    monitor = GenerationMonitorCallback(
        PROMPTS,
        embedder=failing("embedder down"),
        scorer=failing("scorer down"),
        config=GenerationMonitorConfig(num_samples=2, max_new_tokens=4, every_n_steps=2),
    )
    trainer = make_trainer(tokenizer, tmp_path, [monitor], max_steps=4)
    with caplog.at_level(logging.WARNING, logger="qdc_trainer.callbacks.monitor"):
        trainer.train()
    logs = gen_logs(trainer)
    assert [e["step"] for e in logs] == [0, 2, 4] and trainer.state.global_step == 4
    for e in logs:
        assert math.isnan(e["qdc/gen/per_input/vendi"]) and math.isnan(e["qdc/gen/across_input/cosine_distance"])
        assert math.isnan(e["qdc/gen/quality"])
        assert 0 < e["qdc/gen/length"] <= 4 and not math.isnan(
            e["qdc/gen/per_input/distinct_1"]
        )  # the rest is measured
    assert monitor.failures == {"embed": 3, "score": 3}
    assert caplog.text.count("the embedder failed") == 1 and caplog.text.count("the scorer failed") == 1
    assert "RuntimeError: embedder down" in caplog.text
    assert len((tmp_path / SAMPLES_FILE).read_text().splitlines()) == 3 * len(PROMPTS) * 2


def test_a_measuring_error_still_saves_the_samples(tokenizer, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("qdc_trainer.callbacks.monitor.measure_generations", failing("cannot measure"))
    monitor = GenerationMonitorCallback(
        PROMPTS, config=GenerationMonitorConfig(num_samples=2, max_new_tokens=4, every_n_steps=2)
    )
    trainer = make_trainer(tokenizer, tmp_path, [monitor], max_steps=4)
    with caplog.at_level(logging.WARNING, logger="qdc_trainer.callbacks.monitor"):
        trainer.train()
    logs = gen_logs(trainer)
    assert [e["step"] for e in logs] == [0, 2, 4]
    assert set(logs[0]) >= {PREFIX + k for k in monitor.metric_keys()} | {"qdc/gen/seconds"}
    assert all(math.isnan(e[PREFIX + k]) for e in logs for k in monitor.metric_keys())
    assert caplog.text.count("measuring the samples failed") == 1 and monitor.failures == {"measure": 3}
    rows = [json.loads(line) for line in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert sorted({r["step"] for r in rows}) == [0, 2, 4] and len(rows) == 3 * len(PROMPTS) * 2


def test_a_generation_error_is_a_warning_and_training_goes_on(tokenizer, tmp_path, caplog):
    monitor = GenerationMonitorCallback(
        PROMPTS, config=GenerationMonitorConfig(num_samples=2, max_new_tokens=4, every_n_steps=2)
    )
    trainer = make_trainer(tokenizer, tmp_path, [monitor], max_steps=4)
    generate = trainer.model.generate

    def flaky(*args, **kwargs):  # fails during the step-2 evaluation only
        if trainer.state.global_step == 2:
            raise torch.cuda.OutOfMemoryError("pretend out of memory")
        return generate(*args, **kwargs)

    trainer.model.generate = flaky
    with caplog.at_level(logging.WARNING, logger="qdc_trainer.callbacks.monitor"):
        trainer.train()
    logs = {e["step"]: e for e in gen_logs(trainer)}
    assert sorted(logs) == [0, 2, 4] and trainer.state.global_step == 4
    assert all(math.isnan(logs[2][PREFIX + k]) for k in monitor.metric_keys())
    assert logs[4]["qdc/gen/length"] > 0 and not math.isnan(logs[4]["qdc/gen/entropy"])
    assert "generating the samples failed at step 2" in caplog.text and "pretend out of memory" in caplog.text
    assert monitor.failures == {"generate": 1} and trainer.model.training
    rows = [json.loads(line) for line in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert sorted({r["step"] for r in rows}) == [0, 4]


class FakeAccelerator:
    def __init__(self, rank):
        self.process_index, self.num_processes, self.is_main_process = rank, 2, rank == 0


def test_every_rank_makes_the_same_collective_calls_when_one_fails(monkeypatch, tmp_path):
    """Two simulated ranks: rank 1's generation fails, rank 0 measures; both gather once and broadcast once."""
    import accelerate.utils

    calls = []
    sample = {"completion": "a b", "num_tokens": 2, "entropy_sum": 0.0, "entropy_count": 0}
    rank0 = [(dict(sample, prompt_index=0), dict(sample, prompt_index=0, completion="c d"))]

    def gather_object(parts):
        calls.append("gather")
        ((records, error),) = parts
        return [(list(rank0[0]), None), (records, error)] if error else parts + [([], "RuntimeError: rank 1 down")]

    def broadcast_object_list(box):
        calls.append("broadcast")
        if box[0] == {}:  # not the main process: receives the main process's numbers
            box[0] = {"per_input/distinct_1": float("nan")}

    monkeypatch.setattr(accelerate.utils, "gather_object", gather_object)
    monkeypatch.setattr(accelerate.utils, "broadcast_object_list", broadcast_object_list)
    logged = []
    for rank in (1, 0):
        monitor = GenerationMonitorCallback(["p"], config=GenerationMonitorConfig(num_samples=2))
        monitor.trainer = type(
            "T",
            (),
            {
                "accelerator": FakeAccelerator(rank),
                "log": staticmethod(logged.append),
                "args": training_args(tmp_path),
                "control": None,
            },
        )()
        monitor._encoded = [[1]]
        if rank == 1:
            monitor._generate_local = failing("rank 1 down")
        else:
            monitor._generate_local = lambda rank, world, step: list(rank0[0])
        calls.clear()
        logs = monitor.evaluate(step=3)
        assert calls == ["gather", "broadcast"]
        assert math.isnan(logs["qdc/gen/per_input/distinct_1"])  # an incomplete evaluation is not measured
    assert monitor.failures == {"generate": 1}
    rows = [json.loads(line) for line in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert [(r["step"], r["completion"]) for r in rows] == [(3, "a b"), (3, "c d")]  # rank 0's samples are kept


# --------------------------------------------------------------------------- one run per samples file


def test_a_fresh_run_starts_the_samples_file_anew(tokenizer, tmp_path, caplog):
    for _ in range(2):
        monitor = GenerationMonitorCallback(
            PROMPTS, config=GenerationMonitorConfig(num_samples=2, max_new_tokens=4, every_n_steps=2)
        )
        trainer = make_trainer(tokenizer, tmp_path, [monitor], max_steps=4)
        with caplog.at_level(logging.WARNING, logger="qdc_trainer.callbacks.monitor"):
            trainer.train()
        rows = [json.loads(line) for line in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
        assert sorted((r["step"], r["prompt_index"], r["sample"]) for r in rows) == [
            (s, p, j) for s in (0, 2, 4) for p in range(3) for j in range(2)
        ]  # this run's samples only, once each
    assert caplog.text.count("held 18 sample(s) of an earlier run") == 1
    # save_samples=False leaves the file alone
    monitor = GenerationMonitorCallback(
        PROMPTS, config=GenerationMonitorConfig(num_samples=2, max_new_tokens=4, every_n_steps=2, save_samples=False)
    )
    make_trainer(tokenizer, tmp_path, [monitor], max_steps=2).train()
    assert len((tmp_path / SAMPLES_FILE).read_text().splitlines()) == 18


def test_a_resumed_run_keeps_the_samples_its_checkpoint_covers(tokenizer, tmp_path):
    def run(folder, **kwargs):
        monitor = GenerationMonitorCallback(
            PROMPTS, config=GenerationMonitorConfig(num_samples=2, max_new_tokens=4, every_n_steps=2)
        )
        trainer = make_trainer(
            tokenizer,
            folder,
            [monitor],
            model=build_gpt2(tokenizer, seed=2),
            max_steps=6,
            save_strategy="steps",
            save_steps=2,
        )
        trainer.train(**kwargs)
        return (folder / SAMPLES_FILE).read_text().splitlines()

    uninterrupted = run(tmp_path / "a")
    first = run(tmp_path / "b")  # then, as if the run had died after step 6, resume it from step 4
    with open(tmp_path / "b" / SAMPLES_FILE, "a", encoding="utf-8") as f:
        f.write('{"step": 6, "prompt_index": 0, "comp')  # a line cut short by the crash
    resumed = run(tmp_path / "b", resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-4"))
    steps = [json.loads(line)["step"] for line in resumed]
    assert steps == [0] * 6 + [2] * 6 + [4] * 6 + [6] * 6  # step 6 once, from the resumed run
    assert resumed[:18] == first[:18]  # the records the checkpoint covers are kept as they were
    assert resumed == uninterrupted == first  # the resumed run's file is the uninterrupted run's file
    assert not list((tmp_path / "b").glob(SAMPLES_FILE + ".tmp*"))
