"""The synthetic math world: determinism, correct renderers, strategy classification, disjoint roles."""

from __future__ import annotations

import json

import pytest

from sedsft.demo import world
from sedsft.demo.world import (
    SPLITS,
    STRATEGIES,
    build_eval_problems,
    build_pretrain_corpus,
    build_rl_prompts,
    build_sft_set,
    classify_strategy,
    extract_boxed,
    grade_sum,
    make_problem,
    render_solution,
    role_of,
    sample_problems,
    strategies_for,
)
from sedsft.errors import UserError


def _some_problems():
    return [p for split in SPLITS for p in sample_problems(split=split, n=25, role="pretrain", seed=3)]


def test_generation_is_deterministic_and_seeded(tmp_path):
    a = build_sft_set(n_per_split=20, seed=1)
    b = build_sft_set(n_per_split=20, seed=1)
    c = build_sft_set(n_per_split=20, seed=2)
    assert a == b
    assert [e.problem.id for e in a] != [e.problem.id for e in c]
    world.write_sft_jsonl(tmp_path / "a.jsonl", a)
    world.write_sft_jsonl(tmp_path / "b.jsonl", b)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert build_pretrain_corpus(n_per_split=10, seed=0) == build_pretrain_corpus(n_per_split=10, seed=0)


def test_every_renderer_is_correct_and_classified_back():
    seen = set()
    for p in _some_problems():
        assert p.answer == str(sum(p.terms))
        for s in strategies_for(p):
            text = render_solution(p, s)
            assert text.endswith(f"\\boxed{{{p.answer}}}")
            assert extract_boxed(text) == p.answer and grade_sum(p, text)
            assert classify_strategy(p, text) == s
            # every line but the last is a true addition
            for line in text.split("\n")[:-1]:
                lhs, rhs = line.split("=")
                x, y = lhs.split("+")
                assert int(x) + int(y) == int(rhs)
            seen.add(s)
    assert seen == set(STRATEGIES)


def test_tens_only_for_two_digit_splits():
    one = sample_problems(split="L1", n=3, role="eval", seed=0)[0]
    two = sample_problems(split="L4", n=3, role="eval", seed=0)[0]
    assert "tens" not in strategies_for(one)
    assert strategies_for(two) == STRATEGIES
    with pytest.raises(UserError, match="does not apply"):
        render_solution(one, "tens")


def test_classify_tolerates_wrong_intermediate_values_but_not_wrong_terms():
    p = make_problem((47, 38, 25), "L3")
    assert classify_strategy(p, "47+38=84\n84+25=109\n\\boxed{109}") == "left"
    assert not grade_sum(p, "47+38=84\n84+25=109\n\\boxed{109}")
    assert classify_strategy(p, "47+39=86\n86+25=111\n\\boxed{111}") is None  # misread term


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "\\boxed{110}",
        "hello",
        "47+38=85\n85+25=110",
        "47+38=85\n85+25=110\n110",
        "47+38=85\n\\boxed{85}",
        "47+38+25=110\n\\boxed{110}",
        "47+38=85\n85+25=110\n\\boxed{110}\nextra",
    ],
)
def test_classify_returns_none_for_garbage(garbage):
    assert classify_strategy(make_problem((47, 38, 25), "L3"), garbage) is None


def test_extract_boxed_takes_the_last():
    assert extract_boxed("\\boxed{1} then \\boxed{ 23 }") == "23"
    assert extract_boxed("no answer") is None


def test_roles_are_disjoint_and_eval_is_seed_independent():
    ids = {}
    for role in ("pretrain", "sft", "rl", "eval"):
        ids[role] = {
            p.terms for split in SPLITS for p in sample_problems(split=split, n=60, role=role, seed=0)
        }
        assert all(role_of(t) == role for t in ids[role])
    roles = list(ids)
    for i, a in enumerate(roles):
        for b in roles[i + 1 :]:
            assert not ids[a] & ids[b], (a, b)
    evals = build_eval_problems(n_per_split=30)
    assert [p.split for p in evals] == [s for s in SPLITS for _ in range(30)]
    rl_terms = {p.terms for p in build_rl_prompts(n_per_split=30, seed=5)}
    assert not rl_terms & {p.terms for p in evals}


def test_sft_set_uses_one_strategy_and_corpus_is_diverse():
    assert {e.strategy for e in build_sft_set(n_per_split=20, seed=0)} == {world.SFT_STRATEGY}
    corpus = build_pretrain_corpus(n_per_split=50, seed=0, strategies_per_problem=2)
    per_problem = {}
    for e in corpus:
        per_problem.setdefault(e.problem.id, set()).add(e.strategy)
    assert all(len(s) == 2 for s in per_problem.values())
    assert {e.strategy for e in corpus} == set(STRATEGIES)


def test_asking_for_too_many_one_digit_problems_says_how_many_exist():
    with pytest.raises(UserError, match="ask for at most"):
        sample_problems(split="L1", n=400, role="eval", seed=0)
    assert len(sample_problems(split="L1", n=400, role="eval", seed=0, allow_fewer=True)) < 400


def test_writers_produce_the_layouts_readers_expect(tmp_path):
    import pyarrow.parquet as pq

    sft = tmp_path / "sft.jsonl"
    world.write_sft_jsonl(sft, build_sft_set(n_per_split=2, seed=0))
    rec = json.loads(sft.read_text().splitlines()[0])
    assert {"question", "response"} <= rec.keys()

    prompts = build_rl_prompts(n_per_split=2, seed=0)
    world.write_rl_prompts(tmp_path / "rl.jsonl", prompts)
    world.write_rl_prompts(tmp_path / "rl.parquet", prompts)
    rows = pq.read_table(tmp_path / "rl.parquet").to_pylist()
    assert rows == [json.loads(line) for line in (tmp_path / "rl.jsonl").read_text().splitlines()]
    assert {"question", "answer"} <= rows[0].keys()
    with pytest.raises(UserError, match=r"\.jsonl or \.parquet"):
        world.write_rl_prompts(tmp_path / "rl.csv", prompts)

    world.write_eval_problems(tmp_path / "eval.jsonl", build_eval_problems(n_per_split=2))
    rec = json.loads((tmp_path / "eval.jsonl").read_text().splitlines()[-1])
    assert rec.keys() == {"id", "question", "answer", "benchmark"} and rec["benchmark"] == "L5"
