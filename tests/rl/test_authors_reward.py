"""``--reward authors_boxed``: the authors' strict +1 / -1 match of the last box, in GRPO and in the verl export."""

from __future__ import annotations

import importlib.util

import pytest

from sedsft.cli import main as sedsft_main
from sedsft.rl.config import GRPOScriptArguments
from sedsft.rl.rewards import REWARDS, authors_boxed_reward, authors_boxed_score
from sedsft.rl.verl_reward import compute_score

FILLER = "Some working. " * 10  # 140 characters: pushes earlier text out of the last-100 window

# (response, gold, expected score): each row written by hand from the rule in the authors' recipe
TABLE = [
    ("so the answer is \\boxed{42}", "42", 1.0),
    ("so the answer is \\boxed{41}", "42", -1.0),
    ("the answer is 42", "42", -1.0),  # no box
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", 1.0),  # nested braces
    ("\\boxed{\\frac12}", "\\frac{1}{2}", -1.0),  # equal value, other string: no normalisation
    ("\\boxed{ 42}", "42", -1.0),  # not even whitespace
    ("\\boxed{0.5}", "\\frac{1}{2}", -1.0),
    ("first \\boxed{1}, then \\boxed{2}", "2", 1.0),  # the last box
    ("first \\boxed{2}, then \\boxed{1}", "2", -1.0),
    ("\\boxed{42", "42", -1.0),  # never closes
    ("\\fbox{42}", "42", -1.0),  # only \boxed{
    ("\\boxed 42", "42", -1.0),
    ("\\boxed{42}" + FILLER, "42", -1.0),  # the box is outside the last 100 characters
    (FILLER + "\\boxed{42}", "42", 1.0),
    ("<think>maybe \\boxed{41}</think> so \\boxed{42}", "42", 1.0),  # after the thought
    ("<think>so \\boxed{42}</think> no box here", "42", -1.0),  # a box inside the thought does not count
    ("no opening tag, \\boxed{42}</think> trailing", "42", 1.0),  # both tags needed to split
    ("<think>a</think> \\boxed{42} </think> \\boxed{7}", "42", 1.0),  # up to a second </think>
]


@pytest.mark.parametrize("response, gold, expected", TABLE)
def test_authors_boxed_score(response, gold, expected):
    assert authors_boxed_score(response, gold) == expected
    assert compute_score("math_dapo", response, gold, reward="authors_boxed") == expected


def test_trl_reward_reads_the_gold_columns_and_chat_completions():
    completions = [
        [{"role": "assistant", "content": "\\boxed{3}"}],
        [{"role": "assistant", "content": "\\boxed{4}"}],
        "\\boxed{3}",
    ]
    gold = [{"ground_truth": "3", "style": "rule"}, {"ground_truth": "3", "style": "rule"}, None]
    assert authors_boxed_reward(completions, reward_model=gold) == [1.0, -1.0, None]
    assert REWARDS["authors_boxed"] is authors_boxed_reward


def test_grpo_accepts_the_choice():
    assert GRPOScriptArguments(reward="authors_boxed").reward == "authors_boxed"
    with pytest.raises(Exception, match="reward must be one of"):
        GRPOScriptArguments(reward="exact")
    with pytest.raises(Exception, match="--reward_workers grades with --reward math"):
        GRPOScriptArguments(reward="authors_boxed", reward_workers=2)


def test_export_verl_writes_the_chosen_reward(qa_file, tmp_path):
    out = tmp_path / "verl"
    args = ["export-verl", "--data", str(qa_file), "--output_dir", str(out), "--reward", "authors_boxed"]
    assert sedsft_main(args) == 0
    spec = importlib.util.spec_from_file_location("copied_authors_reward", out / "reward.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.REWARD == "authors_boxed"
    assert (
        module.compute_score("sedsft_math", "so \\boxed{0.5}", "\\frac{1}{2}") == -1.0
    )  # math would say 1.0
    assert module.compute_score("sedsft_math", "so \\boxed{0.5}", "\\frac{1}{2}", reward="math") == 1.0
    assert module.compute_score("sedsft_math", "so \\boxed{7}", "7") == 1.0
