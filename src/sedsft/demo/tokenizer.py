"""The demo's tokenizer, built locally: one token per character, digit and world word, ChatML template.

A ``tokenizers`` WordLevel model over a fixed vocabulary: the special tokens, every printable ASCII
character (so each digit is its own token, as in Qwen, and any ASCII text encodes without unknown
tokens), and whole-word tokens for the few multi-character pieces the world writes (``\\boxed{``) and
the chat roles. The pre-tokenizer cuts text into exactly those pieces and the decoder concatenates
them back, so ``decode(encode(x)) == x`` for every ASCII string: no whitespace normalisation at all.
Non-ASCII characters become ``<unk>``.

The chat template is ChatML (``<|im_start|>role\\ncontent<|im_end|>\\n`` per turn, as in Qwen):
rendering a prompt with ``add_generation_prompt=True`` opens the assistant turn, and it is a prefix of
the rendering of the prompt plus the assistant's answer, which is what TRL's prompt-completion SFT
needs. ``eos`` is ``<|im_end|>`` and ``pad`` is ``<|endoftext|>``.

The demo uses no system prompt (:data:`DEMO_SYSTEM_PROMPT`): the paper's long one would cost the tiny
model more tokens than a whole solution.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from sedsft.demo.world import WORLD_WORDS

# Pass as ``system_prompt=`` wherever the demo renders prompts (SFT, RL, evaluation): no system turn.
DEMO_SYSTEM_PROMPT: str | None = None

SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>")
CHAT_WORDS: tuple[str, ...] = ("system", "user", "assistant")

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def build_tokenizer(
    *, words: Sequence[str] = WORLD_WORDS + CHAT_WORDS, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """The demo tokenizer: special tokens, printable ASCII characters, then ``words`` as whole tokens.

    The vocabulary is fixed by ``words`` (ids are stable across builds); save it with
    ``save_pretrained(dir)`` and reload it with ``AutoTokenizer.from_pretrained(dir)``.
    """
    # digits, letters, punctuation, space, tab, newline, carriage return
    chars = [c for c in string.printable if c not in "\x0b\x0c"]
    multi = [w for w in dict.fromkeys(words) if len(w) > 1]
    if any(not w.isascii() for w in multi):
        raise ValueError(f"tokenizer words must be ASCII, got {[w for w in multi if not w.isascii()]}")
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *chars, *multi])}

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # Longest words first so "\boxed{" wins over its single characters; then any one character.
    alternatives = [re.escape(w) for w in sorted(multi, key=len, reverse=True)] + [r"[\s\S]"]
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("|".join(alternatives)), behavior="isolated")
    backend.decoder = decoders.Fuse()

    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        bos_token=None,
        additional_special_tokens=["<|im_start|>"],
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
