"""Token limits: what bounds one sequence before any tensor is made, and prompts fitted to it.

The limit of a command (:func:`token_limit`) is the smallest of its ``--max_length`` option, the model
config's context (``max_position_embeddings``, RoPE scaling included) and the tokenizer's
``model_max_length`` when the tokenizer records one; training keeps a ``--max_length`` past the
context (``max_length_wins``). ``--overflow`` (:data:`OVERFLOW`) says what a longer record gets:
truncated, dropped, or refused naming its file and line (:func:`too_long`). No tokenizer is handed more
than :data:`CHARS_PER_TOKEN` characters per token of the limit. Conversations are tokenized against
a limit by :func:`sedsft.data.tokenize_bounded`; generation prompts are fitted by :func:`bound_prompt`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError

OVERFLOW = ("truncate", "drop", "error")  # what a record longer than the token limit gets (--overflow)
# Text handed to the tokenizer is cut at this many characters per token of the limit: real text
# averages 3-5 characters per token, so the cut is never within the limit's tokens in practice.
CHARS_PER_TOKEN = 32

# Tokenizers write a huge number (1e30) as model_max_length when the model's length is not recorded.
_UNSET_MODEL_MAX_LENGTH = 10**12


def config_context(config) -> int | None:
    """Positions a model config is made for (``max_position_embeddings``, RoPE scaling included), if known."""
    n = getattr(config, "max_position_embeddings", None)
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        return None
    rope = getattr(config, "rope_scaling", None) or getattr(config, "rope_parameters", None)
    rope = rope if isinstance(rope, dict) else {}
    factor, original = rope.get("factor"), rope.get("original_max_position_embeddings")
    if isinstance(factor, int | float) and isinstance(original, int):
        n = max(n, int(factor * original))
    return n


@dataclass(frozen=True)
class TokenLimit:
    """The most tokens one sequence may have, and where that bound comes from (for messages)."""

    tokens: int | None  # None: nothing bounds it
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.tokens} tokens ({self.reason})" if self.tokens is not None else "no limit"


def token_limit(
    *,
    max_length: int | None = None,
    config=None,
    tokenizer=None,
    flag: str = "--max_length",
    max_length_wins: bool = False,
) -> TokenLimit:
    """The smallest of ``max_length`` (the command's option), the model config's context and the
    tokenizer's ``model_max_length`` (when the tokenizer records one): what a record is checked against
    before any tensor is made.

    ``max_length_wins`` (training: sft, and calibrate, which must tokenize as sft does): a given
    ``max_length`` is the limit even past the model's context, as long-context fine-tuning runs (the
    paper's recipe: 32,000 tokens on a 4,096-position model); the context bounds only without one."""
    if max_length is not None and max_length_wins:
        return TokenLimit(int(max_length), flag)
    bounds = []
    if max_length is not None:
        bounds.append((int(max_length), flag))
    context = config_context(config) if config is not None else None
    if context is not None:
        bounds.append((context, "the model's context, max_position_embeddings"))
    n = getattr(tokenizer, "model_max_length", None)
    if isinstance(n, int) and 0 < n < _UNSET_MODEL_MAX_LENGTH:
        bounds.append((n, "the tokenizer's model_max_length"))
    if not bounds:
        return TokenLimit(None)
    tokens, reason = min(bounds, key=lambda b: b[0])
    return TokenLimit(tokens, reason)


def token_ids(tokenizer, text: str) -> list[int]:
    """The token ids of ``text``, no special tokens added."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def check_overflow(overflow: str) -> str:
    if overflow not in OVERFLOW:
        raise UserError(f"overflow must be one of {', '.join(OVERFLOW)}, got {overflow!r}")
    return overflow


def too_long(source: str, what: str, limit: int, reason: str) -> UserError:
    """The one message for a record longer than the token limit under ``--overflow error``."""
    fix = f"raise {reason}" if reason.startswith("--") else "use a model with a longer context"
    return UserError(
        f"{source}: {what} is longer than {limit} tokens ({reason}); shorten the record, {fix}, "
        "or pass --overflow truncate or drop"
    )


def _render_prompt(tokenizer, messages: list[dict]) -> str:
    if getattr(tokenizer, "chat_template", None) is None:
        raise UserError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; use a chat model's "
            "tokenizer"
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _prompt_fits(tokenizer, messages: list[dict], limit: int) -> bool:
    text = _render_prompt(tokenizer, messages)
    return len(text) <= CHARS_PER_TOKEN * limit and len(token_ids(tokenizer, text)) <= limit


def bound_prompt(
    tokenizer,
    messages: list[dict],
    *,
    limit: TokenLimit,
    overflow: str,
    source: str,
    what: str = "the prompt",
) -> list[dict] | None:
    """``messages`` whose generation prompt (chat template, assistant turn opened) fits ``limit``.

    A longer one: ``overflow="drop"`` gives None, ``"error"`` raises a UserError naming ``source``,
    ``"truncate"`` cuts the end of the last user turn so that the rendered prompt fits (None when even
    an empty user turn does not). The tokenizer sees at most ``CHARS_PER_TOKEN * limit`` characters.
    """
    check_overflow(overflow)
    if limit.tokens is None or _prompt_fits(tokenizer, messages, limit.tokens):
        return messages
    if overflow == "error":
        raise too_long(source, what, limit.tokens, limit.reason)
    user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if overflow == "drop" or user is None:
        return None

    def with_user(content: str) -> list[dict]:
        return [*messages[:user], {**messages[user], "content": content}, *messages[user + 1 :]]

    budget = limit.tokens - len(token_ids(tokenizer, _render_prompt(tokenizer, with_user(""))))
    ids = token_ids(tokenizer, messages[user]["content"][: CHARS_PER_TOKEN * max(budget, 0)])[
        : max(budget, 0)
    ]
    while ids:  # decoding and encoding again may merge or split a token at the cut: shorten until it fits
        cut = with_user(tokenizer.decode(ids))
        if _prompt_fits(tokenizer, cut, limit.tokens):
            return cut
        ids = ids[: -max(1, len(ids) // 64)]
    return None


def local_token_limit(
    model: str,
    *,
    tokenizer: str | None = None,
    max_length: int | None = None,
    max_length_wins: bool = False,
    trust_remote_code: bool = False,
):
    """``(tokenizer, TokenLimit)`` of a local checkpoint, read without loading its weights: the smallest
    of ``max_length``, the model config's context and the tokenizer's ``model_max_length`` (see
    :func:`token_limit` for ``max_length_wins``). For checks made before the run folder is opened."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(
            tokenizer or model, trust_remote_code=trust_remote_code, local_files_only=True
        )
    except (OSError, ValueError) as e:  # unreadable config or tokenizer files in the user's folder
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot read the model config or tokenizer in {tokenizer or model}: {first}") from e
    return tok, token_limit(
        max_length=max_length, config=config, tokenizer=tok, max_length_wins=max_length_wins
    )
