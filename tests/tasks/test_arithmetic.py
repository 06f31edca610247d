"""The built-in arithmetic task: generator controls, verifier, splits, tokenizer and tiny model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from qdc_trainer.metrics import VerifierScorer, extract_final_answer, reasoning_steps
from qdc_trainer.tasks import arithmetic as A
from qdc_trainer.tasks.arithmetic import (
    OOD_TEMPLATES,
    TEMPLATES,
    ArithmeticConfig,
    Problem,
    build_model,
    build_tokenizer,
    extract_answer,
    generate_completions,
    generate_examples,
    make_splits,
    parse_problem,
    render,
    tokenize_examples,
    verify,
)

ALL_TEMPLATES = range(len(TEMPLATES) + len(OOD_TEMPLATES))
PROBLEM = Problem(4, (("*", 3), ("-", 2), ("*", 5)))  # (4 * 3 - 2) * 5 = 50: two-digit results, all operators


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def splits():
    return make_splits(ArithmeticConfig(), train_size=2000, eval_size=200, ood_size=200, seed=3)


# --------------------------------------------------------------------------- verifier


@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_verifier_accepts_the_solution_in_every_template(template):
    prompt, completion = render(PROBLEM, template)
    assert parse_problem(prompt) == PROBLEM
    assert verify(prompt, completion) == 1.0
    assert extract_answer(completion) == 50
    assert extract_final_answer(completion) == "50"  # the metrics' generic reader agrees
    assert reasoning_steps([completion])[0] == PROBLEM.num_ops + 1  # one line per operation, then the answer


@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_verifier_rejects_corrupted_solutions_in_every_template(template):
    prompt, completion = render(PROBLEM, template)
    eqs = PROBLEM.equations
    wrong_answer = render(PROBLEM, template, answer=51)[1]
    # the second step is off by one and the error carries on: the final answer is consistent but wrong
    carried = [eqs[0], (12, "-", 2, 11), (11, "*", 5, 55)]
    wrong_step = render(PROBLEM, template, equations=carried, answer=55)[1]
    # a wrong step whose final answer happens to be right still fails
    hidden = [eqs[0], (12, "-", 2, 9), (10, "*", 5, 50)]
    hidden_step = render(PROBLEM, template, equations=hidden)[1]
    skipped = render(PROBLEM, template, equations=eqs[1:])[1]
    swapped = render(PROBLEM, template, equations=[(3, "*", 4, 12), *eqs[1:]])[1]
    for bad in (wrong_answer, wrong_step, hidden_step, skipped, swapped):
        assert verify(prompt, bad) == 0.0, bad
    answer_line = completion.rsplit("\n", 1)[1]
    cut = len(completion) - len(answer_line)
    for end in range(0, cut + answer_line.index("50") + 1):  # truncated before the answer is complete
        assert verify(prompt, completion[:end]) == 0.0, completion[:end]
    for garbage in ("", " ", "\n\n", "<unk> <unk>", "Step Step = = =", "12 + + 7 = ", "The answer is", "####", "é∑ 🙂"):
        assert verify(prompt, garbage) == 0.0
        assert extract_answer(garbage) is None


def test_verifier_reads_to_the_first_answer_and_handles_spacing():
    prompt, completion = render(PROBLEM, 0)
    assert verify(prompt, completion + "\nThe answer is 7.\nWhat is 1 + 1?") == 1.0  # rambling after the answer
    assert verify(prompt, "The answer is 7.\n" + completion) == 0.0  # the first answer counts
    spaced = completion.replace("50", "5 0").replace("12", "1 2").replace("10", "1 0")
    assert verify(prompt, spaced) == 1.0  # "5 0" reads as 50
    assert verify(prompt, "The answer is 50.") == 0.0  # no steps
    assert verify(prompt, "The answer is 50.", check_steps=False) == 1.0
    assert verify(prompt, completion, check_steps=False) == 1.0


def test_verifier_as_quality_scorer(splits):
    val = splits["validation"]
    scorer = VerifierScorer(verify)
    scores = scorer(list(val["prompt"]), list(val["completion"]))
    assert scores.tolist() == [1.0] * val.num_rows
    garbage = scorer(list(val["prompt"][:3]), ["", "1 + ", "The answer is"])
    assert garbage.tolist() == [0.0, 0.0, 0.0]


def test_parse_problem_errors():
    with pytest.raises(ValueError, match="no arithmetic problem"):
        parse_problem("hello there\n")
    with pytest.raises(ValueError, match="not a left-to-right chain"):
        parse_problem("What is 2 + 3 * 4?")
    with pytest.raises(ValueError, match="no operation"):
        parse_problem("Start with 5. What number do you get?")
    with pytest.raises(ValueError):
        verify("no problem here", "The answer is 5.")
    assert parse_problem("What is 2 * 3 + 4?") == Problem(2, (("*", 3), ("+", 4)))
    assert parse_problem("Q: ((1 + 2) * 3 - 4) * 5 = ?").answer == 25


# --------------------------------------------------------------------------- generator


def test_generator_is_deterministic():
    cfg = ArithmeticConfig(noise=0.3)
    a = generate_examples(50, cfg, seed=7)
    assert a == generate_examples(50, cfg, seed=7)
    assert a[:20] == generate_examples(20, cfg, seed=7)  # a shorter call is a prefix
    assert a != generate_examples(50, cfg, seed=8)
    assert generate_examples(5, dataclasses.replace(cfg, seed=7)) == a[:5]  # seed=None: config.seed


@pytest.mark.parametrize(
    "cfg",
    [
        ArithmeticConfig(),
        ArithmeticConfig(min_ops=2, max_ops=4, operators="+-", num_templates=1, noise=0.0),
        ArithmeticConfig(min_ops=1, max_ops=1, operators="*", min_operand=0, max_operand=12, max_result=200),
        ArithmeticConfig(
            min_ops=3, max_ops=3, operators="-+", min_operand=2, max_operand=20, max_result=60, num_templates=3
        ),
    ],
)
def test_generator_respects_the_controls(cfg):
    examples = generate_examples(600, cfg, seed=1)
    assert {e["num_ops"] for e in examples} == set(range(cfg.min_ops, cfg.max_ops + 1))
    assert {e["template"] for e in examples} == set(range(cfg.num_templates))
    assert set("".join(e["operators"] for e in examples)) == set(cfg.operators)
    for e in examples:
        problem = parse_problem(e["prompt"])
        assert problem.num_ops == e["num_ops"] and problem.operators == e["operators"] and problem.answer == e["answer"]
        assert problem.expression == e["expression"] and e["text"] == e["prompt"] + e["completion"]
        operands = [problem.start] + [b for _, b in problem.steps]
        assert all(cfg.min_operand <= x <= cfg.max_operand for x in operands)
        assert all(0 <= c <= cfg.max_result for *_, c in problem.equations)
        assert e["prompt"].endswith("\n") and not e["completion"].startswith(("\n", " "))


def test_noise_share_and_corruptions_fail_the_verifier():
    cfg = ArithmeticConfig(noise=0.25)
    examples = generate_examples(2000, cfg, seed=0)
    share = np.mean([e["corrupted"] for e in examples])
    assert 0.22 < share < 0.28
    kinds = {e["corruption"] for e in examples if e["corrupted"]}
    assert kinds == {"step", "answer"}
    for e in examples:
        score = verify(e["prompt"], e["completion"])
        assert score == (0.0 if e["corrupted"] else 1.0), e["text"]
        assert (e["corruption"] == "") == (not e["corrupted"])
    assert not any(e["corrupted"] for e in generate_examples(500, ArithmeticConfig(noise=0.0), seed=0))
    assert all(e["corrupted"] for e in generate_examples(100, ArithmeticConfig(noise=1.0), seed=0))


def test_held_out_problems_never_reach_training(splits):
    train = set(splits["train"]["expression"])
    assert not train & set(splits["validation"]["expression"])
    assert not train & set(splits["test_ood"]["expression"])
    assert {row["num_ops"] for row in splits["validation"]} == {1, 2, 3}  # still in distribution
    assert not any(splits["validation"]["corrupted"]) and not any(splits["test_ood"]["corrupted"])
    assert 0.05 < np.mean(splits["train"]["corrupted"]) < 0.15  # default noise 0.1


def test_ood_splits_are_outside_the_training_ranges(splits):
    cfg = ArithmeticConfig()
    ood = splits["test_ood"]  # default kind: unseen phrasings
    assert set(ood["template"]) == set(range(len(TEMPLATES), len(TEMPLATES) + len(OOD_TEMPLATES)))
    train_phrasings = {t.prompt.split("{")[0] for t in TEMPLATES}
    assert not any(p.startswith(tuple(train_phrasings)) for p in ood["prompt"])
    assert all(verify(p, c) == 1.0 for p, c in zip(ood["prompt"], ood["completion"]))

    ops = make_splits(cfg, 10, 10, 100, seed=0, ood="ops", extra_ops=2)["test_ood"]
    assert set(ops["num_ops"]) == {cfg.max_ops + 1, cfg.max_ops + 2}
    operands = make_splits(cfg, 10, 10, 100, seed=0, ood="operands")["test_ood"]
    both = make_splits(cfg, 10, 10, 100, seed=0, ood="both")["test_ood"]
    for split in (operands, both):
        for prompt in split["prompt"]:
            problem = parse_problem(prompt)
            assert all(x > cfg.max_operand for x in [problem.start] + [b for _, b in problem.steps])
    assert min(both["num_ops"]) > cfg.max_ops and max(operands["num_ops"]) <= cfg.max_ops
    with pytest.raises(ValueError, match="kind"):
        make_splits(cfg, 10, 10, 10, ood="longer")


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(min_ops=0), "min_ops"),
        (dict(min_ops=3, max_ops=2), "max_ops"),
        (dict(min_operand=-1), "min_operand"),
        (dict(min_operand=5, max_operand=4), "max_operand"),
        (dict(max_operand=20, max_result=10), "max_result"),
        (dict(operators=""), "operators"),
        (dict(operators="+/"), "operators"),
        (dict(operators="++"), "operators"),
        (dict(num_templates=0), "num_templates"),
        (dict(num_templates=len(TEMPLATES) + 1), "num_templates"),
        (dict(noise=1.5), "noise"),
        (dict(noise=float("nan")), "noise"),
        (dict(held_out=1.0), "held_out"),
        (dict(seed="0"), "seed"),
        (dict(max_ops=2.5), "max_ops"),
    ],
)
def test_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        ArithmeticConfig(**kwargs)


def test_impossible_config_and_bad_arguments():
    with pytest.raises(ValueError, match="widen the ranges"):
        generate_examples(5, ArithmeticConfig(operators="-", min_operand=5, max_operand=6, min_ops=3, max_ops=3))
    with pytest.raises(ValueError, match="held_out"):
        generate_examples(5, ArithmeticConfig(held_out=0.0), held_out=True)
    with pytest.raises(ValueError, match="templates"):
        generate_examples(5, ArithmeticConfig(), templates=[99])
    with pytest.raises(ValueError, match="^n="):
        generate_examples(-1, ArithmeticConfig())
    with pytest.raises(ValueError, match="extra_ops"):
        A.ood_config(ArithmeticConfig(), "ops", extra_ops=0)
    assert A.make_dataset(0, ArithmeticConfig()).num_rows == 0


# --------------------------------------------------------------------------- tokenizer and model


def test_tokenizer_round_trip(tok, splits, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(loaded) == len(tok) < 160
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token, loaded.unk_token) == (
        "<bos>",
        "<eos>",
        "<pad>",
        "<unk>",
    )
    for name in ("train", "validation", "test_ood"):
        for row in splits[name].select(range(100)):
            ids = tok(row["text"]).input_ids
            assert loaded(row["text"]).input_ids == ids
            assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
            for t in (tok, loaded):
                assert t.decode(ids, skip_special_tokens=True) == row["text"]
            decoded = loaded.decode(loaded(row["completion"], add_special_tokens=False).input_ids)
            assert verify(row["prompt"], decoded) == (0.0 if row["corrupted"] else 1.0)
    unknown = tok("Say hello to 12.").input_ids  # words outside the vocabulary
    assert unknown.count(tok.unk_token_id) == 3 and tok.decode(unknown, skip_special_tokens=True) == " 12."


def test_tokenize_examples_masks_the_prompt(tok, splits):
    batch = splits["train"][:8]
    out = tokenize_examples(batch, tok)
    for i, (ids, labels) in enumerate(zip(out["input_ids"], out["labels"])):
        assert ids == tok(batch["text"][i]).input_ids + [tok.eos_token_id]  # the boundary never merges tokens
        n_prompt = len(tok(batch["prompt"][i]).input_ids)
        assert labels[:n_prompt] == [-100] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    unmasked = tokenize_examples(batch, tok, mask_prompt=False, add_eos=False)
    assert unmasked["labels"][0] == unmasked["input_ids"][0] == tok(batch["text"][0]).input_ids


def test_tiny_model_trains_and_generates(tok, splits):
    from transformers import DataCollatorForSeq2Seq

    model = build_model(tok, seed=0)
    same = build_model(tok, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters()))
    longest = max(
        len(tok(p).input_ids) for p in make_splits(ArithmeticConfig(), 0, 0, 200, ood="both")["test_ood"]["prompt"]
    )
    assert longest + A.DEFAULT_MAX_NEW_TOKENS <= model.config.n_positions
    features = tokenize_examples(splits["train"][:16], tok)
    batch = DataCollatorForSeq2Seq(tok, padding=True)([{k: v[i] for k, v in features.items()} for i in range(16)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    prompts = list(splits["validation"]["prompt"][:5])
    batched = generate_completions(model, tok, prompts, max_new_tokens=12)
    one_by_one = [generate_completions(model, tok, [p], max_new_tokens=12)[0] for p in prompts]
    assert batched == one_by_one  # left padding does not change greedy completions
    assert all(isinstance(c, str) for c in batched)
    assert model.training  # the mode is restored
    assert A.evaluate_accuracy(model, tok, splits["validation"].select(range(4)), max_new_tokens=8) == 0.0


def test_public_api_is_documented():
    from qdc_trainer import tasks

    for name in tasks.__all__:
        obj = getattr(tasks, name)
        if callable(obj):
            assert obj.__doc__, f"{name} has no docstring"
    assert set(tasks.__all__) == set(A.__all__)
