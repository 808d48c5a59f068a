"""Tiny local chat model, tokenizer and prompts for the RL tests: nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

from ..tiny import char_tokenizer, tiny_llama

ROOT = Path(__file__).resolve().parents[2]
RL_DATA = (ROOT / ".." / "shared" / "data" / "rl" / "math_level1_filtered.parquet").resolve()


# Four tiny arithmetic prompts in the question/answer layout.
QA_ROWS = [
    {"question": "1+1?", "answer": "2"},
    {"question": "2+2?", "answer": "4"},
    {"question": "3+3?", "answer": "6"},
    {"question": "4+4?", "answer": "8"},
]


build_char_tokenizer = char_tokenizer


def build_tiny_model(tok, seed: int = 0):
    """A random 2-layer Llama over ``tok``'s vocabulary with an untied head (CPU, float32)."""
    return tiny_llama(tok, seed=seed, tie_word_embeddings=False)
