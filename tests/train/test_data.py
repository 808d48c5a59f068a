"""sedsft.data: file formats, layouts, completion-only labels, padding, and the errors users see."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sedsft import data, limits
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


# ---- bounded inputs: records are capped before they are parsed, text before it is tokenized ----------


def test_a_line_over_the_cap_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_RECORD_BYTES", 1000)
    f = tmp_path / "x.jsonl"
    f.write_text('{"question": "q", "answer": "a"}\n' + '{"question": "' + "y" * 5000 + '"}\n')
    with pytest.raises(UserError, match=r"x.jsonl:2: the line is longer than 1,000 bytes"):
        load_records(f)
    f.write_text('{"question": "q", "answer": "' + "y" * 960 + '"}\n')  # within the cap, newline included
    assert len(load_records(f)[0]["answer"]) == 960


def test_json_and_parquet_records_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_RECORD_BYTES", 1000)
    pq.write_table(pa.Table.from_pylist([{"question": "q", "answer": "y" * 5000}]), tmp_path / "one.parquet")
    with pytest.raises(UserError, match=r"one.parquet rows 1-1: more than 1,000 bytes per row"):
        load_records(tmp_path / "one.parquet")  # refused from the row group's size, before it is read
    rows = [{"question": "q", "answer": "a"}] * 9 + [{"question": "q", "answer": "y" * 5000}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ten.parquet")
    with pytest.raises(UserError, match=r"ten.parquet row 10: the record holds more than 1,000 bytes"):
        load_records(tmp_path / "ten.parquet")
    (tmp_path / "big.json").write_text(json.dumps([{"question": "q", "answer": "y" * 5000}]))
    with pytest.raises(UserError, match=r"big.json item 1: the record holds more than 1,000 bytes"):
        load_records(tmp_path / "big.json")
    monkeypatch.setattr(data, "MAX_JSON_BYTES", 100)
    with pytest.raises(
        UserError, match=r"big.json: a .json file of 5,\d\d\d bytes is parsed whole.*as JSONL"
    ):
        load_records(tmp_path / "big.json")


def test_limit_reads_only_the_first_records(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"question": "q1", "answer": "a"}\n{"question": "q2", "answer": "a"}\n{"broken\n')
    assert [r["question"] for r in load_records(f, limit=2)] == ["q1", "q2"]
    with pytest.raises(UserError, match="x.jsonl:3: broken JSON line"):
        load_records(f)
    pq.write_table(pa.Table.from_pylist([{"q": str(i)} for i in range(5)]), tmp_path / "p.parquet")
    assert [r["_source"] for r in load_records(tmp_path / "p.parquet", limit=3)] == [
        "p.parquet:1",
        "p.parquet:2",
        "p.parquet:3",
    ]


def test_lines_are_decoded_one_at_a_time(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_bytes(b'\xef\xbb\xbf{"question": "caf\xc3\xa9", "answer": "1"}\r\n{"question": "ab\xff"}\n')
    with pytest.raises(UserError, match=r"x.jsonl:2: not UTF-8 text \(byte 0xff at column 17\)"):
        load_records(f)
    f.write_bytes(b'\xef\xbb\xbf{"question": "caf\xc3\xa9", "answer": "1"}\r\n')
    assert load_records(f)[0]["question"] == "café"


class _Counting:
    """A tokenizer that records the length of every text it is handed."""

    def __init__(self, tok):
        self.tok, self.seen = tok, []

    def __call__(self, text, **kw):
        self.seen.append(len(text))
        return self.tok(text, **kw)

    def __getattr__(self, name):
        return getattr(self.tok, name)


def test_only_a_bounded_prefix_reaches_the_tokenizer():
    tok = tiny_tokenizer()
    conv = to_conversation({"question": "q", "response": "ab" * 50_000}, system_prompt=None)
    counting = _Counting(tok)
    out = data.tokenize_bounded(counting, conv, max_length=64)
    assert out.truncated and max(counting.seen) <= limits.CHARS_PER_TOKEN * 64
    # the same tokens as tokenizing everything and cutting afterwards (the char tokenizer: 1 token/char)
    text = tok.apply_chat_template(conv["prompt"] + conv["completion"], tokenize=False)
    assert out.row["input_ids"] == tok(text, add_special_tokens=False)["input_ids"][:64]
    assert tok.decode(out.row["input_ids"]).endswith("assistant\n" + "ab" * 22)  # 20 template tokens, then 44


def test_overflow_error_names_the_record():
    tok = tiny_tokenizer()
    conv = to_conversation({"question": "q", "response": "x" * 500}, system_prompt=None)
    with pytest.raises(
        UserError, match=r"f.jsonl:7: the conversation is longer than 100 tokens \(--max_length\)"
    ):
        tokenize_conversation(tok, conv, max_length=100, overflow="error", source="f.jsonl:7")
    assert tokenize_conversation(tok, conv, max_length=1000, overflow="error") is not None
    recs = [{"question": "q", "response": "x" * 500, "_source": "f.jsonl:2"}]
    with pytest.raises(
        UserError, match=r"f.jsonl:2: .* than 100 tokens \(the model's context.*longer context"
    ):
        build_sft_dataset(recs, tok, max_length=100, overflow="error", reason="the model's context")


def test_token_limit_is_the_smallest_bound():
    from transformers import LlamaConfig

    tok = tiny_tokenizer()  # model_max_length unset: tokenizers write 1e30, which bounds nothing
    config = LlamaConfig(max_position_embeddings=512)
    assert limits.token_limit(max_length=1024, config=config, tokenizer=tok).tokens == 512
    assert limits.token_limit(max_length=100, config=config, tokenizer=tok).reason == "--max_length"
    assert limits.token_limit(tokenizer=tok).tokens is None
    # training keeps a --max_length past the context (the paper's recipe); without one the context bounds
    assert limits.token_limit(max_length=1024, config=config, max_length_wins=True).tokens == 1024
    assert limits.token_limit(config=config, max_length_wins=True).tokens == 512
    tok.model_max_length = 300
    assert limits.token_limit(max_length=1024, config=config, tokenizer=tok).tokens == 300
    roped = LlamaConfig(
        max_position_embeddings=4096,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
    )
    assert limits.config_context(roped) == 16384


def test_prompts_are_fitted_to_the_limit():
    tok = tiny_tokenizer()
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "0123456789" * 100}]
    limit = limits.TokenLimit(200, "the model's context")
    cut = limits.bound_prompt(tok, messages, limit=limit, overflow="truncate", source="p.jsonl:3")
    rendered = tok.apply_chat_template(cut, tokenize=False, add_generation_prompt=True)
    assert len(tok(rendered, add_special_tokens=False)["input_ids"]) == 200  # exactly full: 1 token per char
    assert messages[1]["content"].startswith(cut[1]["content"]) and cut[0] == messages[0]
    assert limits.bound_prompt(tok, messages, limit=limit, overflow="drop", source="p") is None
    with pytest.raises(UserError, match=r"p.jsonl:3: the prompt is longer than 200 tokens"):
        limits.bound_prompt(tok, messages, limit=limit, overflow="error", source="p.jsonl:3")
    short = messages[:1] + [{"role": "user", "content": "1+1?"}]
    assert limits.bound_prompt(tok, short, limit=limit, overflow="error", source="p") is short
