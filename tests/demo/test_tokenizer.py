"""The demo tokenizer: exact round trip, no unknown tokens, ChatML prefix property, save and reload."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from sedsft.demo.tokenizer import DEMO_SYSTEM_PROMPT, build_tokenizer
from sedsft.demo.world import SPLITS, render_solution, sample_problems, strategies_for
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT, build_messages


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _texts():
    for split in SPLITS:
        for p in sample_problems(split=split, n=5, role="sft", seed=0):
            yield p.question
            for s in strategies_for(p):
                yield render_solution(p, s)


def test_world_texts_round_trip_without_unknown_tokens(tok):
    for text in _texts():
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text


def test_digits_are_single_tokens_and_boxed_is_one(tok):
    assert tok.tokenize("\\boxed{120}") == ["\\boxed{", "1", "2", "0", "}"]
    assert tok.tokenize("47+38=85\n") == ["4", "7", "+", "3", "8", "=", "8", "5", "\n"]


def test_any_ascii_round_trips_and_non_ascii_is_unknown(tok):
    text = DEFAULT_SYSTEM_PROMPT + "  \t tabs, CAPS & {braces}\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids and tok.decode(ids) == text
    assert tok.unk_token_id in tok("é", add_special_tokens=False)["input_ids"]


def test_special_tokens(tok):
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.eos_token_id != tok.pad_token_id
    assert tok.tokenize("<|im_start|>user\nhi<|im_end|>")[0] == "<|im_start|>"
    assert (
        tok("1+2", add_special_tokens=True)["input_ids"] == tok("1+2", add_special_tokens=False)["input_ids"]
    )


@pytest.mark.parametrize("system_prompt", [DEMO_SYSTEM_PROMPT, "Be brief."])
def test_chat_template_prompt_is_prefix_of_full_conversation(tok, system_prompt):
    p = sample_problems(split="L3", n=1, role="sft", seed=0)[0]
    prompt = build_messages(p.question, system_prompt=system_prompt)
    completion = [{"role": "assistant", "content": render_solution(p, "tens")}]
    prompt_text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tok.apply_chat_template(prompt + completion, tokenize=False)
    assert full_text.startswith(prompt_text)
    assert prompt_text.endswith("<|im_start|>assistant\n")
    assert full_text == prompt_text + completion[0]["content"] + "<|im_end|>\n"
    # token level too: the prompt's ids are a prefix of the conversation's ids
    prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
    full_ids = tok(full_text, add_special_tokens=False)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids
    assert ("<|im_start|>system" in full_text) == bool(system_prompt)


def test_save_and_reload(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "<|im_start|>user\n1+2+3=?<|im_end|>\n"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.decode(again(text)["input_ids"]) == text
    assert again.chat_template == tok.chat_template
    assert (again.eos_token, again.pad_token, len(again)) == (tok.eos_token, tok.pad_token, len(tok))


def test_vocabulary_is_stable(tok):
    assert build_tokenizer().get_vocab() == tok.get_vocab()
