"""RL prompts from every layout; the paper's RL parquet loads whole."""

from __future__ import annotations

import pytest

from sedsft.errors import UserError
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT
from sedsft.rl.prompts import load_rl_prompts, rl_prompt, rl_prompts_from_records

SYS = {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
USER = {"role": "user", "content": "What is 2+2?"}


@pytest.mark.parametrize(
    ("record", "messages", "gold"),
    [
        ({"prompt": [USER], "reward_model": {"ground_truth": "4", "style": "rule"}}, [SYS, USER], "4"),
        ({"question": "What is 2+2?", "answer": "4"}, [SYS, USER], "4"),
        ({"problem": "What is 2+2?", "solution": "Add: \\boxed{4}."}, [SYS, USER], "4"),
        ({"question": "What is 2+2?", "response": "so \\boxed{4}"}, [SYS, USER], "4"),
        ({"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}, [SYS, USER], "4"),
        ({"prompt": "What is 2+2?", "completion": "\\boxed{4}"}, [SYS, USER], "4"),
        (
            {"prompt": [USER], "completion": [{"role": "assistant", "content": "\\boxed{4}"}]},
            [SYS, USER],
            "4",
        ),
        ({"messages": [USER, {"role": "assistant", "content": "\\boxed{4}"}]}, [SYS, USER], "4"),
        ({"messages": [{"role": "system", "content": "Be brief."}, USER], "answer": 4}, None, "4"),
        ({"question": "What is 2+2?", "ground_truth": "4"}, [SYS, USER], "4"),
    ],
)
def test_layouts(record, messages, gold):
    p = rl_prompt(record)
    assert p.answer == gold
    if messages is None:  # the data's own system turn is kept
        assert p.messages[0] == {"role": "system", "content": "Be brief."}
    else:
        assert p.messages == messages


def test_no_system_prompt_and_no_gold():
    p = rl_prompt({"question": "q"}, system_prompt=None)
    assert p.messages == [{"role": "user", "content": "q"}] and p.answer is None


def test_missing_gold_policies():
    records = [{"question": "a", "answer": "1"}, {"question": "b", "answer": ""}]
    assert [p.answer for p in rl_prompts_from_records(records)] == ["1", None]
    assert [p.index for p in rl_prompts_from_records(records, missing_gold="drop")] == [0]
    with pytest.raises(UserError, match="data:2: record has no gold"):
        rl_prompts_from_records(records, missing_gold="error")


def test_errors_name_the_record(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n{"text": "no prompt"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: record has no prompt"):
        load_rl_prompts(path)


def test_paper_rl_parquet(rl_data):
    prompts = load_rl_prompts(rl_data)
    assert len(prompts) == 2069
    assert all(p.messages[0] == SYS and p.messages[-1]["role"] == "user" for p in prompts)
    # One row of the published file has an empty ground_truth (row 1603, a multiple-choice problem);
    # every other row has a gold answer.
    missing = [p.index for p in prompts if not p.answer]
    assert missing == [1602]
    assert len(load_rl_prompts(rl_data, missing_gold="drop")) == 2068
