"""sedsft.data: file formats, layouts, completion-only labels, padding, and the errors users see."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sedsft.data import SFTCollator, build_sft_dataset, load_records, to_conversation, tokenize_conversation
from sedsft.errors import UserError

from .tiny import tiny_tokenizer


def test_formats_and_sources(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        '{"question": "q1", "answer": "a1"}\n\n{"question": "q2", "answer": "a2"}\n'
    )
    (tmp_path / "b.json").write_text(json.dumps({"data": [{"problem": "p", "solution": "s"}]}))
    pq.write_table(pa.Table.from_pylist([{"prompt": "x", "completion": "y"}]), tmp_path / "c.parquet")
    recs = load_records(tmp_path)
    assert [r["_source"] for r in recs] == ["a.jsonl:1", "a.jsonl:3", "b.json:1", "c.parquet:1"]


@pytest.mark.parametrize(
    "content, name, match",
    [
        ('{"question": "q"}\n{"question": \n', "x.jsonl", r"x.jsonl:2: broken JSON line"),
        ("", "x.jsonl", "empty"),
        ("a,b\n", "x.csv", "unsupported file type"),
        ('{"not": "a list"}', "x.json", "expected a list"),
    ],
)
def test_bad_files(tmp_path, content, name, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(UserError, match=match):
        load_records(tmp_path / name)


def test_missing_path():
    with pytest.raises(UserError, match="does not exist"):
        load_records("/nonexistent/train.jsonl")


def test_layouts():
    sys_msg = {"role": "system", "content": "S"}
    layouts = [
        {"question": "Q", "response": "A"},
        {"question": "Q", "answer": "A"},
        {"problem": "Q", "solution": "A"},
        {"prompt": "Q", "completion": "A"},
        {"prompt": [{"role": "user", "content": "Q"}], "completion": [{"role": "assistant", "content": "A"}]},
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
    ]
    for rec in layouts:
        conv = to_conversation(rec, system_prompt="S")
        assert conv == {
            "prompt": [sys_msg, {"role": "user", "content": "Q"}],
            "completion": [{"role": "assistant", "content": "A"}],
        }
    own = {
        "messages": [
            {"role": "system", "content": "mine"},
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A"},
        ]
    }
    assert to_conversation(own, system_prompt="S")["prompt"][0]["content"] == "mine"
    assert (
        to_conversation({"question": "Q", "response": "A"}, system_prompt=None)["prompt"][0]["role"] == "user"
    )


def test_layout_errors():
    with pytest.raises(UserError, match=r"f.jsonl:3: no prompt/response fields; found \['query2', 'x'\]"):
        to_conversation({"query2": 1, "x": 2, "_source": "f.jsonl:3"})
    with pytest.raises(UserError, match="'response' is empty"):
        to_conversation({"question": "q", "response": "  "})


def test_labels_cover_the_answer_and_end_of_turn():
    tok = tiny_tokenizer()
    row = tokenize_conversation(tok, to_conversation({"question": "1+1?", "response": "2"}))
    learned = [t for t in row["labels"] if t != -100]
    assert tok.decode(learned) == "2<|im_end|>"
    prompt_len = row["labels"].index(learned[0])
    assert tok.decode(row["input_ids"][:prompt_len]).endswith("<|im_start|>assistant\n")
    assert row["labels"][-1] == -100  # ChatML's trailing newline is input only


def test_overflow_is_counted():
    tok = tiny_tokenizer()
    recs = [{"question": "q", "response": "x" * n, "_source": f"f:{n}"} for n in (5, 40, 200)]
    kw = dict(system_prompt=None, max_length=80)
    ds, rep = build_sft_dataset(recs, tok, overflow="drop", **kw)
    assert (len(ds), rep.dropped_too_long, rep.truncated) == (2, 1, 0) and "f:200" in rep.summary()
    ds, rep = build_sft_dataset(recs, tok, overflow="truncate", **kw)
    assert (len(ds), rep.truncated) == (3, 1) and max(len(r) for r in ds["input_ids"]) == 80
    with pytest.raises(UserError, match="no usable training examples"):
        build_sft_dataset(recs, tok, system_prompt="s" * 100, max_length=50)


def test_collator_pads_right():
    batch = SFTCollator(0)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [5], "labels": [5]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]
