"""Offline difficulty filtering of RL prompts: sample n answers per prompt, keep 0 < solve rate < 1.

A prompt the model always solves, or never solves, gives GRPO a group whose rewards are all equal:
zero advantage, no gradient, a wasted rollout. The paper samples each MATH prompt 8 times with the
model to be trained and keeps the rest (an offline version of DAPO's dynamic sampling); this module
does the same with any generation backend of ``sedsft.eval.generation`` (Transformers or vLLM):

    result = filter_prompts(prompts, HFBackend(model, tokenizer), config=FilterConfig(n=8))
    kept = [prompts[i] for i in result.kept]

Resumable: with ``log_path`` every finished prompt is appended to a JSONL log (``JsonlLog``) as soon
as its n samples are graded, and a rerun reads the log back and samples only the prompts not in it.
A prompt is identified by its position and a hash of its messages and gold, so a log is never
applied to a different file. Prompts without a gold answer are never sampled (solve rate None) and
never kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sedsft.errors import UserError
from sedsft.eval.grader_pool import GraderPool, grade_one
from sedsft.io import JsonlLog
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
        if self.n < 1:
            raise UserError(f"n must be >= 1, got {self.n}")
        if self.batch_prompts < 1:
            raise UserError(f"batch_prompts must be >= 1, got {self.batch_prompts}")
        if not 0.0 <= self.min_rate < self.max_rate <= 1.0:
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
    return tokenizer.apply_chat_template(prompt.messages, tokenize=False, add_generation_prompt=True)


def _read_log(log: JsonlLog, n: int) -> dict[str, dict]:
    done = {}
    for record in log.records():
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
    pool: GraderPool | None = None,
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
    todo = [i for i, (p, k) in enumerate(zip(prompts, keys, strict=True)) if k not in rates and p.answer]
    for p, k in zip(prompts, keys, strict=True):
        if not p.answer:
            rates[k] = None  # nothing to grade against: never sampled, never kept

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="filter", unit="prompt")
    for start in range(0, len(todo), config.batch_prompts):
        batch = todo[start : start + config.batch_prompts]
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
        tasks = [(s.text, prompts[i].answer) for i, group in zip(batch, samples, strict=True) for s in group]
        if pool is not None:
            grades = pool.grade(tasks, grader=grader)
        else:
            grades = [grade_one(response, gold, grader) for response, gold in tasks]
        records = []
        for j, i in enumerate(batch):
            group = grades[j * config.n : (j + 1) * config.n]
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
            bar.update(len(batch))
    if bar is not None:
        bar.close()

    solve_rates = [rates[k] for k in keys]
    kept = [i for i, r in enumerate(solve_rates) if config.keeps(r)]
    return FilterResult(solve_rates=solve_rates, kept=kept, num_sampled=len(todo), num_resumed=num_resumed)
