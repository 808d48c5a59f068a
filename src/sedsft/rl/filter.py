"""Offline difficulty filtering of RL prompts: sample n answers per prompt, keep 0 < solve rate < 1.

A prompt the model always solves, or never solves, gives GRPO a group whose rewards are all equal:
zero advantage, no gradient, a wasted rollout. The paper samples each MATH prompt 8 times with the
model to be trained and keeps the rest (an offline version of DAPO's dynamic sampling); this module
does the same with any generation backend of ``sedsft.eval.generation`` (Transformers or vLLM):

    result = filter_prompts(prompts, HFBackend(model, tokenizer), config=FilterConfig(n=8))
    kept = [prompts[i] for i in result.kept]

Resumable, exactly: with ``log_path`` every finished prompt is appended to a JSONL log (``JsonlLog``)
as soon as its n samples are graded, and a rerun reads the log back. Batches are fixed groups of
``batch_prompts`` consecutive gradable prompts, each seeded from its first prompt's index, the same in
every run; a rerun skips the batches that are fully logged and regenerates any other batch whole
(a batch cut mid-way by a kill is sampled again as it was, and only its missing prompts are
appended), so a resumed run equals an uninterrupted one. A prompt is identified by its position and
a hash of its messages and gold, so a log is never applied to a different file. Prompts without a
gold answer are never sampled (solve rate None) and never kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sedsft.errors import UserError, check_count, check_number
from sedsft.eval.grader_pool import GraderPool, InProcessGrader
from sedsft.io import JsonlLog
from sedsft.prompts import apply_template
from sedsft.rl.prompts import RLPrompt

Grader = Callable[[str, str], bool]  # (response, gold) -> correct


@dataclass(frozen=True)
class FilterConfig:
    """How prompts are sampled and which solve rates are kept."""

    n: int = field(default=8, metadata={"help": "samples per prompt (paper: 8)"})
    temperature: float = field(
        default=1.0, metadata={"help": "sampling temperature (GRPO's rollout temperature)"}
    )
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass in (0, 1]"})
    max_new_tokens: int = field(default=3072, metadata={"help": "token budget per sample (GRPO's)"})
    seed: int = field(
        default=0, metadata={"help": "base seed; each batch is seeded from its first prompt's index"}
    )
    batch_prompts: int = field(default=64, metadata={"help": "prompts per generate call (n samples each)"})
    min_rate: float = field(default=0.0, metadata={"help": "keep prompts whose solve rate is > min_rate"})
    max_rate: float = field(default=1.0, metadata={"help": "keep prompts whose solve rate is < max_rate"})
    save_responses: bool = field(default=False, metadata={"help": "keep the sampled responses in the log"})

    def __post_init__(self):
        check_count("n", self.n)
        check_number("temperature", self.temperature, low=0)
        check_number("top_p", self.top_p, low=0, high=1, open_low=True)
        check_count("max_new_tokens", self.max_new_tokens)
        check_count("seed", self.seed, minimum=0)
        check_count("batch_prompts", self.batch_prompts)
        check_number("min_rate", self.min_rate, low=0, high=1)
        check_number("max_rate", self.max_rate, low=0, high=1)
        if not self.min_rate < self.max_rate:
            raise UserError(f"need 0 <= min_rate < max_rate <= 1, got {self.min_rate} and {self.max_rate}")

    def keeps(self, rate: float | None) -> bool:
        """Whether a prompt with this solve rate is kept (strictly between min_rate and max_rate)."""
        return rate is not None and self.min_rate < rate < self.max_rate


@dataclass
class FilterResult:
    """Per-prompt solve rates (input order) and the positions of the kept prompts."""

    solve_rates: list[float | None]  # None: the prompt has no gold answer
    kept: list[int]
    num_sampled: int  # prompts sampled by this call
    num_resumed: int  # prompts read back from the log

    def summary(self) -> dict:
        rates = [r for r in self.solve_rates if r is not None]
        return {
            "prompts": len(self.solve_rates),
            "kept": len(self.kept),
            "always_solved": sum(r == 1.0 for r in rates),
            "never_solved": sum(r == 0.0 for r in rates),
            "no_gold": len(self.solve_rates) - len(rates),
            "mean_solve_rate": sum(rates) / len(rates) if rates else None,
            "sampled_now": self.num_sampled,
            "resumed": self.num_resumed,
        }


def prompt_key(prompt: RLPrompt) -> str:
    """A stable id for one prompt of one file: its position and a hash of its messages and gold."""
    payload = json.dumps([prompt.messages, prompt.answer], sort_keys=True, ensure_ascii=False)
    return f"{prompt.index}:{hashlib.sha1(payload.encode('utf-8')).hexdigest()[:16]}"


def render(tokenizer, prompt: RLPrompt) -> str:
    """The generation text of a prompt: the tokenizer's chat template with the assistant turn opened."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise UserError("the model's tokenizer has no chat template; use a chat/instruct checkpoint")
    return apply_template(tokenizer, prompt.messages)


def _read_log(log: JsonlLog, n: int) -> dict[str, dict]:
    done = {}
    for record in log.records(fields={"key": str}):
        if record.get("n") != n:
            raise UserError(
                f"{log.path} was written with n={record.get('n')} samples per prompt, this run asks n={n}; "
                "use another output_dir or the same n"
            )
        done[record["key"]] = record
    return done


def filter_prompts(
    prompts: Sequence[RLPrompt],
    backend,
    *,
    config: FilterConfig = FilterConfig(),
    grader: Grader | None = None,
    pool: GraderPool | InProcessGrader | None = None,
    log_path: str | Path | None = None,
    progress: bool = False,
) -> FilterResult:
    """Sample ``config.n`` responses per prompt with ``backend``, grade them, keep 0 < solve rate < 1.

    ``backend``: anything with ``tokenizer`` and ``generate(texts, SamplingConfig) -> list[list[Sample]]``
    (``HFBackend``, ``VLLMBackend``, or a stub). ``grader``: ``(response, gold) -> bool``, by default
    the evaluation's ``is_correct``; with ``pool`` (a ``GraderPool``) grading runs in its processes
    under its hard timeout (``grader`` must then be a module-level function). ``log_path``: the
    JSONL log that makes the call resumable (module doc).
    """
    from sedsft.eval.generation import SamplingConfig

    keys = [prompt_key(p) for p in prompts]
    log = JsonlLog(log_path) if log_path is not None else None
    done = _read_log(log, config.n) if log is not None else {}
    rates: dict[str, float | None] = {k: r["solve_rate"] for k, r in done.items()}
    num_resumed = sum(k in rates for k in keys)
    for p, k in zip(prompts, keys, strict=True):
        if not p.answer:
            rates[k] = None  # nothing to grade against: never sampled, never kept
    # Fixed batches over every gradable prompt, whatever is logged: a resumed run samples as an uninterrupted one.
    gradable = [i for i, p in enumerate(prompts) if p.answer]
    batches = [gradable[s : s + config.batch_prompts] for s in range(0, len(gradable), config.batch_prompts)]
    batches = [b for b in batches if any(keys[i] not in rates for i in b)]
    num_sampled = sum(keys[i] not in rates for b in batches for i in b)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_sampled, desc="filter", unit="prompt")
    for batch in batches:
        cfg = SamplingConfig(
            temperature=config.temperature,
            top_p=config.top_p,
            max_new_tokens=config.max_new_tokens,
            n=config.n,
            seed=config.seed + prompts[batch[0]].index,
        )
        samples = backend.generate([render(backend.tokenizer, prompts[i]) for i in batch], cfg)
        if len(samples) != len(batch) or any(len(s) != config.n for s in samples):
            raise RuntimeError(
                f"backend returned {[len(s) for s in samples]} samples for {len(batch)} prompts x {config.n}"
            )
        missing = [
            j for j, i in enumerate(batch) if keys[i] not in rates
        ]  # a torn batch keeps its logged part
        tasks = [(s.text, prompts[batch[j]].answer) for j in missing for s in samples[j]]
        grades = (pool or InProcessGrader()).grade(tasks, grader=grader)
        records = []
        for m, j in enumerate(missing):
            i = batch[j]
            group = grades[m * config.n : (m + 1) * config.n]
            correct = [g.correct for g in group]
            record = {
                "key": keys[i],
                "index": prompts[i].index,
                "n": config.n,
                "num_correct": sum(correct),
                "solve_rate": sum(correct) / config.n,
                "correct": correct,
                "answers": [g.extracted for g in group],
            }
            if config.save_responses:
                record["responses"] = [s.text for s in samples[j]]
            rates[keys[i]] = record["solve_rate"]
            records.append(record)
        if log is not None:
            log.extend(records)  # one batch of finished prompts: a rerun will not sample them again
        if bar is not None:
            bar.update(len(missing))
    if bar is not None:
        bar.close()

    solve_rates = [rates[k] for k in keys]
    kept = [i for i, r in enumerate(solve_rates) if config.keeps(r)]
    return FilterResult(solve_rates=solve_rates, kept=kept, num_sampled=num_sampled, num_resumed=num_resumed)
