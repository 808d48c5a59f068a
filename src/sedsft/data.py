"""SFT data: local files -> records -> chat conversations -> token ids with completion-only labels.

The three steps are separate public functions because other sub-commands (analysis, GRPO) reuse them:

    records = load_records("data/train.jsonl")          # JSONL / JSON / Parquet file, or a folder of them
    conv = to_conversation(records[0])                  # {"prompt": [...messages], "completion": [assistant]}
    row = tokenize_conversation(tokenizer, conv, max_length=4096)   # input_ids, attention_mask, labels

Every record keeps ``_source`` ("train.jsonl:12"), so a bad record is reported by file and line. Labels
are -100 on the prompt and on padding; the loss covers the assistant's tokens up to and including its
end-of-turn token. Nothing is skipped silently: :func:`build_sft_dataset` counts what it truncated or
dropped and says so.

Inputs are bounded before they are read whole. A JSONL file is read line by line, and a line longer
than :data:`MAX_RECORD_BYTES` is refused with its file and line before it is parsed; a ``.json`` file
(one document) above :data:`MAX_JSON_BYTES` is refused (write it as JSONL); a Parquet row group is
read one at a time and a record above the cap is refused with its row. A record within the cap is
tokenized against a token limit (:mod:`sedsft.limits`: ``--max_length``, the model's context, the
tokenizer's ``model_max_length``): only a prefix of ``CHARS_PER_TOKEN`` characters per token of the
limit is ever handed to the tokenizer, so no tokenizer sees a string of unbounded size.
"""

from __future__ import annotations

import codecs
import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .limits import CHARS_PER_TOKEN, TokenLimit, check_overflow, token_ids, too_long
from .limits import OVERFLOW as OVERFLOW  # --overflow's choices, importable from here as before
from .prompts import DEFAULT_SYSTEM_PROMPT

logger = logging.getLogger(__name__)

DATA_EXTENSIONS = (".jsonl", ".json", ".parquet")
IGNORE_INDEX = -100
# One record (a JSONL line, a Parquet row) at most: 64 MiB of text is some 16M tokens, far beyond any
# model's context, and far below the gigabyte strings on which a tokenizer panics or memory runs out.
MAX_RECORD_BYTES = 64 * 2**20
MAX_JSON_BYTES = 256 * 2**20  # a .json file is one document, parsed whole: larger ones go as JSONL

# (prompt field, completion field), first match wins; "messages" and "prompt"/"completion" are tried first.
_QA_LAYOUTS: tuple[tuple[str, str], ...] = (
    ("question", "response"),
    ("question", "answer"),
    ("problem", "solution"),
    ("query", "response"),
    ("instruction", "output"),
)


# ---- files -> records --------------------------------------------------------------------------------


def load_records(path: str | Path, *, limit: int | None = None) -> list[dict]:
    """Records from a local ``.jsonl`` / ``.json`` / ``.parquet`` file, or a folder of them (sorted by name).

    A ``.json`` file holds a list of objects or ``{"data": [...]}``. Each record gets ``_source``
    ("file.jsonl:12", 1-based line or row) for error messages. ``limit``: only the first ``limit``
    records are read (the rest of the files is not opened). A record larger than
    :data:`MAX_RECORD_BYTES` is refused with its file and line. Bad input raises :class:`UserError`.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(
            f"data path {str(path)!r} does not exist; pass a local .jsonl/.json/.parquet file or folder"
        )
    if p.is_dir():
        files = sorted(
            f
            for f in p.iterdir()
            if f.is_file() and f.suffix in DATA_EXTENSIONS and not f.name.startswith(".")
        )
        if not files:
            raise UserError(f"data folder {str(p)!r} has no {'/'.join(DATA_EXTENSIONS)} files")
    else:
        files = [p]
    records: list[dict] = []
    for f in files:
        if limit is not None and len(records) >= limit:
            break
        records += _load_file(f, limit=None if limit is None else limit - len(records))
    if not records:
        raise UserError(f"data path {str(p)!r} holds no records")
    return records


def _load_file(f: Path, *, limit: int | None = None) -> list[dict]:
    if f.suffix not in DATA_EXTENSIONS:
        raise UserError(f"{f}: unsupported file type {f.suffix!r}; use one of {', '.join(DATA_EXTENSIONS)}")
    if f.stat().st_size == 0:
        raise UserError(f"{f}: the file is empty")
    loader = {".jsonl": _load_jsonl, ".json": _load_json, ".parquet": _load_parquet}[f.suffix]
    records = loader(f, limit=limit)
    if not records:
        raise UserError(f"{f}: the file holds no records")
    return records


def read_text(f: str | Path) -> str:
    """A user's file as text (UTF-8, a byte-order mark allowed); a byte that is not UTF-8 is a UserError
    naming the file, line and column. For every data file a command reads whole (JSONL is streamed:
    :func:`read_lines`)."""
    f = Path(f)
    raw = f.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - raw.rfind(b"\n", 0, e.start)
        raise UserError(_not_utf8(f, line, raw[e.start], column)) from None


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n:,} bytes"


def _not_utf8(f: Path, line: int, byte: int, column: int) -> str:
    return f"{f}:{line}: not UTF-8 text (byte 0x{byte:02x} at column {column}); save the file as UTF-8"


def read_lines(f: str | Path, *, max_bytes: int | None = None) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a user's text file, one line in memory at a time (UTF-8, a byte-order
    mark allowed). A line longer than ``max_bytes`` (default :data:`MAX_RECORD_BYTES`) is a UserError
    naming the file and line, raised before more than ``max_bytes`` of it is read; so is a byte that is
    not UTF-8 (with its column)."""
    f = Path(f)
    max_bytes = MAX_RECORD_BYTES if max_bytes is None else max_bytes
    with open(f, "rb") as stream:
        for i in itertools.count(1):
            raw = stream.readline(max_bytes + 1)
            if not raw:
                return
            if len(raw) > max_bytes and not raw.endswith(b"\n"):
                raise UserError(
                    f"{f}:{i}: the line is longer than {_size(max_bytes)}, far more than any model reads; "
                    "split or shorten that record"
                )
            if i == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                yield i, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(_not_utf8(f, i, raw[e.start], e.start + 1)) from None


def _load_jsonl(f: Path, *, limit: int | None = None) -> list[dict]:
    out: list[dict] = []
    for i, line in read_lines(f):
        if limit is not None and len(out) >= limit:
            break
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(
                f"{f}:{i}: broken JSON line ({e.msg} at column {e.colno}); fix or remove it"
            ) from None
        out.append(_as_record(obj, f"{f.name}:{i}", where=f"{f}:{i}"))
    return out


def _load_json(f: Path, *, limit: int | None = None) -> list[dict]:
    size = f.stat().st_size
    if size > MAX_JSON_BYTES:
        raise UserError(
            f"{f}: a .json file of {_size(size)} is parsed whole (at most {_size(MAX_JSON_BYTES)}); write it "
            "as JSONL, one record per line, which is read line by line"
        )
    try:
        obj = json.loads(read_text(f))
    except json.JSONDecodeError as e:
        raise UserError(
            f"{f}:{e.lineno}: invalid JSON ({e.msg}); a .json file must hold a list of objects"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("data"), list):
        obj = obj["data"]
    if not isinstance(obj, list):
        raise UserError(
            f'{f}: expected a list of objects or {{"data": [...]}}, got a JSON {type(obj).__name__}'
        )
    obj = obj[:limit] if limit is not None else obj
    return [_as_record(r, f"{f.name}:{i}", where=f"{f} item {i}") for i, r in enumerate(obj, start=1)]


def _load_parquet(f: Path, *, limit: int | None = None) -> list[dict]:
    """The rows of a Parquet file, one row group in memory at a time."""
    import pyarrow.parquet as pq

    reader = _arrow(f, lambda: pq.ParquetFile(f))
    out: list[dict] = []
    for g in range(reader.num_row_groups):
        if limit is not None and len(out) >= limit:
            break
        meta = reader.metadata.row_group(g)
        if meta.total_byte_size > MAX_RECORD_BYTES * max(meta.num_rows, 1):  # refused before it is read
            raise UserError(
                f"{f} rows {len(out) + 1}-{len(out) + meta.num_rows}: more than {_size(MAX_RECORD_BYTES)} "
                "per row, far more than any model reads; shorten them"
            )
        rows = _arrow(f, lambda g=g: reader.read_row_group(g).to_pylist())
        out += [
            _as_record(r, f"{f.name}:{i}", where=f"{f} row {i}")
            for i, r in enumerate(rows, start=len(out) + 1)
        ]
    return out[:limit] if limit is not None else out


def _arrow(f: Path, call):
    """``call()``, a pyarrow read of ``f``; a corrupt file (pyarrow raises several types) is a UserError."""
    try:
        return call()
    except Exception as e:
        first = (str(e).splitlines() or [""])[0]
        raise UserError(f"{f}: cannot read parquet ({type(e).__name__}: {first})") from None


def _as_record(obj: Any, source: str, *, where: str) -> dict:
    if not isinstance(obj, dict):
        raise UserError(
            f"{where}: expected a JSON object per record, got a JSON {type(obj).__name__}; "
            'write one {"field": value, ...} object per record'
        )
    if _text_size(obj) > MAX_RECORD_BYTES:  # JSONL lines are refused before parsing; JSON and Parquet here
        raise UserError(
            f"{where}: the record holds more than {_size(MAX_RECORD_BYTES)} of text, far more than "
            "any model reads; split or shorten it"
        )
    return {**obj, "_source": source}


def _text_size(value: Any) -> int:
    """Characters of text in a record (strings and bytes, nested), a bound on what tokenizing it costs."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, dict):
        return sum(_text_size(k) + _text_size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(_text_size(v) for v in value)
    return 0


# ---- records -> conversations -----------------------------------------------------------------------


def to_conversation(record: dict, *, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> dict:
    """TRL's conversational prompt-completion form: ``{"prompt": [system?, user, ...], "completion": [assistant]}``.

    Accepted layouts: ``messages`` (the last assistant turn is the completion), ``prompt``/``completion``
    (strings or message lists), ``question``/``response``, ``question``/``answer``, ``problem``/``solution``,
    ``query``/``response``, ``instruction``/``output``. ``system_prompt`` is added unless the record has
    its own system message (``None`` or "" adds none).
    """
    source = record.get("_source", "record")
    if "messages" in record:
        messages = _messages(record["messages"], source, "messages")
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None or last == 0:
            raise UserError(f"{source}: 'messages' needs a user turn followed by an assistant turn")
        prompt, completion = messages[:last], [messages[last]]
    elif "prompt" in record and "completion" in record:
        prompt = _turns(record["prompt"], "user", source, "prompt")
        completion = _turns(record["completion"], "assistant", source, "completion")
    else:
        pair = next(((q, a) for q, a in _QA_LAYOUTS if q in record and a in record), None)
        if pair is None:
            found = sorted(k for k in record if k != "_source")
            layouts = ", ".join(["messages", "prompt/completion", *(f"{q}/{a}" for q, a in _QA_LAYOUTS)])
            raise UserError(f"{source}: no prompt/response fields; found {found}; expected one of: {layouts}")
        prompt = _turns(record[pair[0]], "user", source, pair[0])
        completion = _turns(record[pair[1]], "assistant", source, pair[1])
    if system_prompt and not any(m["role"] == "system" for m in prompt):
        prompt = [{"role": "system", "content": system_prompt}, *prompt]
    if completion[-1]["role"] != "assistant":
        raise UserError(f"{source}: the completion must end with an assistant message")
    return {"prompt": prompt, "completion": completion}


def _turns(value: Any, role: str, source: str, name: str) -> list[dict]:
    if isinstance(value, str):
        if not value.strip():
            raise UserError(f"{source}: field {name!r} is empty")
        return [{"role": role, "content": value}]
    return _messages(value, source, name)


def _messages(value: Any, source: str, name: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise UserError(f"{source}: field {name!r} must be a non-empty string or list of messages")
    out = []
    for i, m in enumerate(value):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise UserError(f"{source}: {name}[{i}] must be an object with string 'role' and 'content'")
        if not m["content"].strip() and m["role"] != "system":
            raise UserError(f"{source}: {name}[{i}] ({m['role']}) has empty content")
        out.append({"role": m["role"], "content": m["content"]})
    return out


# ---- conversations -> token ids -------------------------------------------------------------------


@dataclass(frozen=True)
class Tokenized:
    """One conversation as token ids: the row (at most ``max_length`` long), and whether it was longer."""

    row: dict | None  # None: no label token (the prompt alone fills max_length)
    truncated: bool


def tokenize_bounded(tokenizer, conv: dict, *, max_length: int | None = None) -> Tokenized:
    """The conversation as ``input_ids``/``attention_mask``/``labels``, cut at ``max_length`` tokens.

    Only the first ``CHARS_PER_TOKEN * max_length`` characters of the rendered text reach the tokenizer;
    a text longer than that counts as longer than ``max_length`` (``truncated``) even if its prefix holds
    fewer tokens. Labels as :func:`tokenize_conversation` says.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise UserError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; use a chat model's "
            "tokenizer or pass --chat_template_path"
        )
    prompt_text = tokenizer.apply_chat_template(conv["prompt"], tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(conv["prompt"] + conv["completion"], tokenize=False)
    if not full_text.startswith(prompt_text):
        raise UserError(
            "the chat template does not render the prompt (with add_generation_prompt=True) as a prefix of the "
            "full conversation; use a template whose assistant turn starts where the generation prompt ends"
        )
    chars = len(full_text) if max_length is None else min(len(full_text), CHARS_PER_TOKEN * max_length)
    cut_text = chars < len(full_text)
    prompt_ids = token_ids(tokenizer, prompt_text[:chars])
    completion_ids = (
        token_ids(tokenizer, full_text[len(prompt_text) : chars]) if chars > len(prompt_text) else []
    )
    labels = list(completion_ids)
    ends = _end_of_turn_ids(tokenizer)
    last_end = max((i for i, t in enumerate(completion_ids) if t in ends), default=None)
    if last_end is not None:  # keep the template's trailing text as input only
        labels[last_end + 1 :] = [IGNORE_INDEX] * (len(labels) - last_end - 1)
    input_ids = prompt_ids + completion_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + labels
    truncated = cut_text or (max_length is not None and len(input_ids) > max_length)
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    if all(t == IGNORE_INDEX for t in labels[1:]):
        return Tokenized(None, truncated)
    return Tokenized(
        {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}, truncated
    )


def tokenize_conversation(
    tokenizer,
    conv: dict,
    *,
    max_length: int | None = None,
    overflow: str = "truncate",
    source: str = "record",
    reason: str = "--max_length",
) -> dict | None:
    """``input_ids``, ``attention_mask``, ``labels`` for one conversation, rendered with the chat template.

    Labels are -100 on the prompt (everything up to and including the opened assistant turn) and on
    whatever the template writes after the assistant's last end-of-turn token (ChatML's trailing newline).
    Longer than ``max_length``: ``overflow="truncate"`` cuts the end, ``"drop"`` returns ``None``,
    ``"error"`` raises a UserError naming ``source`` (and ``reason``, where the limit comes from); an
    example whose prompt alone fills ``max_length`` (nothing left to learn) is also ``None``. The
    tokenizer only sees a bounded prefix of the text (:func:`tokenize_bounded`).
    """
    check_overflow(overflow)
    out = tokenize_bounded(tokenizer, conv, max_length=max_length)
    if out.truncated and overflow == "error":
        raise too_long(source, "the conversation", max_length, reason)
    if out.truncated and overflow == "drop":
        return None
    return out.row


def check_records_fit(
    records: Sequence[dict],
    tokenizer,
    *,
    limit: TokenLimit,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
) -> None:
    """Refuse the first record longer than ``limit`` (``--overflow error``), before anything is written."""
    for record in records:
        conv = to_conversation(record, system_prompt=system_prompt)
        if tokenize_bounded(tokenizer, conv, max_length=limit.tokens).truncated:
            raise too_long(record.get("_source", "record"), "the conversation", limit.tokens, limit.reason)


def _end_of_turn_ids(tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(tok) if tok in tokenizer.get_vocab() else None
        if tid is not None:
            ids.add(tid)
    return ids


@dataclass
class DataReport:
    """What :func:`build_sft_dataset` did with the records: nothing is dropped without being counted."""

    records: int = 0
    examples: int = 0
    truncated: int = 0  # longer than max_length, cut at max_length (overflow="truncate")
    dropped_too_long: int = 0  # longer than max_length (overflow="drop")
    dropped_no_completion: int = 0  # the prompt alone fills max_length: no label token left
    dropped_sources: list[str] = field(default_factory=list)  # first few, for the message

    def summary(self) -> str:
        s = f"{self.examples} training examples from {self.records} records"
        parts = []
        if self.truncated:
            parts.append(f"{self.truncated} truncated to max_length")
        if self.dropped_too_long:
            parts.append(f"{self.dropped_too_long} dropped as longer than max_length")
        if self.dropped_no_completion:
            parts.append(f"{self.dropped_no_completion} dropped because the prompt fills max_length")
        if parts:
            example = f"; dropped e.g. {', '.join(self.dropped_sources[:3])}" if self.dropped_sources else ""
            s += " (" + "; ".join(parts) + example + ")"
        return s


def build_sft_dataset(
    records: Sequence[dict],
    tokenizer,
    *,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    max_length: int | None = None,
    overflow: str = "truncate",
    reason: str = "--max_length",
):
    """A ``datasets.Dataset`` of tokenized rows (input_ids, attention_mask, labels) and a :class:`DataReport`.

    ``max_length`` is the token limit (:func:`token_limit`; ``reason`` says where it comes from, for
    ``overflow="error"``'s message).
    """
    from datasets import Dataset

    check_overflow(overflow)
    report = DataReport(records=len(records))
    rows = []
    for record in records:
        conv = to_conversation(record, system_prompt=system_prompt)
        src = record.get("_source", "record")
        out = tokenize_bounded(tokenizer, conv, max_length=max_length)
        if out.truncated:
            if overflow == "error":
                raise too_long(src, "the conversation", max_length, reason)
            if overflow == "drop":
                report.dropped_too_long += 1
                report.dropped_sources.append(src)
                continue
            report.truncated += 1
        if out.row is None:
            report.dropped_no_completion += 1
            report.dropped_sources.append(src)
            continue
        rows.append(out.row)
    report.examples = len(rows)
    if not rows:
        raise UserError(
            f"no usable training examples: {report.summary()}; raise max_length or check the data"
        )
    return Dataset.from_list(rows), report


class SFTCollator:
    """The one collator: tokenized rows -> a batch, right-padded or padding-free.

    Padded (default): ``input_ids`` / ``attention_mask`` / ``labels`` as ``[B, T]``, padded to the longest
    row (labels -100, attention 0 on padding).

    ``padding_free=True``: every document of the batch is laid end to end in one row, ``[1, N]``, with
    ``position_ids`` restarting at 0 at each document and no ``attention_mask``, so Transformers' attention
    keeps documents apart (a block-diagonal causal mask for eager/sdpa/flex; varlen kernels for flash).
    A row may already be a pack of documents (a ``seq_lengths`` column, as TRL's ``pack_dataset`` writes).
    The label of each document's first token is -100: it is never predicted from the previous document.
    The batch also carries TRL's varlen metadata (``cu_seq_lens_q/k``, ``max_length_q/k``) for flash kernels.
    """

    def __init__(
        self, pad_token_id: int, *, pad_to_multiple_of: int | None = None, padding_free: bool = False
    ):
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding_free = padding_free

    def _width(self, length: int) -> int:
        m = self.pad_to_multiple_of
        return (length + m - 1) // m * m if m else length

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if self.padding_free:
            return self._flat(rows)
        length = self._width(max(len(r["input_ids"]) for r in rows))
        batch = {
            "input_ids": torch.full((len(rows), length), self.pad_token_id, dtype=torch.long),  # [B, T]
            "attention_mask": torch.zeros((len(rows), length), dtype=torch.long),
            "labels": torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long),
        }
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            batch["input_ids"][i, :n] = torch.as_tensor(r["input_ids"])
            batch["attention_mask"][i, :n] = 1
            batch["labels"][i, :n] = torch.as_tensor(r["labels"])
        return batch

    def _flat(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids = torch.cat([torch.as_tensor(r["input_ids"], dtype=torch.long) for r in rows])  # [N]
        labels = torch.cat([torch.as_tensor(r["labels"], dtype=torch.long) for r in rows])  # [N]
        lengths = [n for r in rows for n in r.get("seq_lengths") or [len(r["input_ids"])]]
        if sum(lengths) != ids.numel():
            raise ValueError(f"seq_lengths add up to {sum(lengths)}, but the rows hold {ids.numel()} tokens")
        starts = torch.tensor([0, *lengths[:-1]]).cumsum(0)  # [D] first token of each document
        position_ids = torch.arange(ids.numel()) - torch.repeat_interleave(
            starts, torch.tensor(lengths)
        )  # [N]
        labels[starts] = IGNORE_INDEX  # no label crosses a document boundary
        width = self._width(ids.numel())
        pad = width - ids.numel()
        if pad:  # padding is one more "document" of its own, never a label
            ids = torch.cat([ids, ids.new_full((pad,), self.pad_token_id)])
            labels = torch.cat([labels, labels.new_full((pad,), IGNORE_INDEX)])
            position_ids = torch.cat([position_ids, torch.arange(pad)])
            lengths = [*lengths, pad]
        cu = torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)  # [D + 1]
        return {
            "input_ids": ids[None],  # [1, N]
            "labels": labels[None],
            "position_ids": position_ids[None],
            "cu_seq_lens_q": cu,
            "cu_seq_lens_k": cu,
            "max_length_q": max(lengths),
            "max_length_k": max(lengths),
        }
