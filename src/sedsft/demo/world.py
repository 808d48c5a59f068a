"""The demo's synthetic math world: sums with several valid solution strategies and exact answers.

Every problem is a sum of distinct positive integers, e.g. ``47+38+25=?``, with a gold integer answer.
A solution writes one binary addition per line and ends in ``\\boxed{<answer>}``; the strategies
differ in which additions they write:

- ``left``: running total from the first term (``47+38=85``, ``85+25=110``): the shortest solution,
  but every step is a full carry addition and the running total grows to three digits.
- ``right``: the same running total from the last term.
- ``pairs``: first term with last, second with second-to-last, ..., then add up the pair sums.
- ``tens`` (only when every term has two digits): add the tens (``40+30=70``, ``70+20=90``), then the
  ones (``7+8=15``, ``15+5=20``), then the two totals (``90+20=110``). Longest, but every step is
  either a one-digit addition or an addition of round tens, the easiest kind for a small model.

Five difficulty splits stand in for the paper's eight benchmarks (more terms, bigger numbers, more
steps); :data:`SPLITS` describes them and reports use their names as columns.

What the design intends. The pre-training corpus renders each problem with several strategies,
uniformly: the base model's diverse prior, like an instruct model's. The SFT set renders every
problem with ONE strategy (``left``, the shortest, "textbook" solution): the pressure that makes
cross-entropy SFT collapse onto one path. On the easy one-digit splits every strategy is easy and
``left`` is fine. On the hard splits ``left`` needs long carry additions with three-digit running
totals, which a tiny model gets wrong more often, while ``tens`` only ever adds digits or round tens.
So a model that kept some probability on ``tens`` (and the other strategies) at the first step of its
answer can discover under RL that it pays on hard problems; a collapsed model has nothing to discover.
The strategy is decided by the first line of the answer, so the "room to explore" that SED-SFT keeps
sits at a few identifiable tokens; :func:`classify_strategy` measures which strategies survive.

Roles (pre-training, SFT, RL, evaluation) draw from disjoint problem sets: a problem's role bucket is
a stable hash of its terms, independent of any seed, so evaluation problems are never trained on.
Generation is deterministic: the same seed gives byte-identical problems and files.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from sedsft.errors import UserError
from sedsft.io import atomic_write_bytes, atomic_write_text


@dataclass(frozen=True)
class SplitSpec:
    """One difficulty split: how many terms, and how many digits each term has."""

    n_terms: int
    digits: int  # 1: terms in 1..9; 2: terms in 11..99 with a non-zero ones digit
    description: str


# Easy to hard. Names are the benchmark columns of the demo report.
SPLITS: dict[str, SplitSpec] = {
    "L1": SplitSpec(3, 1, "3 one-digit terms"),
    "L2": SplitSpec(4, 1, "4 one-digit terms"),
    "L3": SplitSpec(3, 2, "3 two-digit terms"),
    "L4": SplitSpec(4, 2, "4 two-digit terms"),
    "L5": SplitSpec(5, 2, "5 two-digit terms"),
}

STRATEGIES: tuple[str, ...] = ("left", "right", "pairs", "tens")

# The single strategy of the SFT set: the shortest solution (see the module docstring).
SFT_STRATEGY = "left"

# Role buckets of the stable problem hash (out of 10): evaluation and RL 20% each, SFT 20%, the rest
# pre-training. Changing these changes which problems are held out, so bump WORLD_VERSION with them.
_ROLE_BUCKETS: dict[str, range] = {
    "eval": range(0, 2),
    "rl": range(2, 4),
    "sft": range(4, 6),
    "pretrain": range(6, 10),
}
WORLD_VERSION = "1"

# Words the world's texts use beyond digits and symbols (the demo tokenizer gives each one token).
WORLD_WORDS: tuple[str, ...] = ("\\boxed{",)


@dataclass(frozen=True)
class SumsProblem:
    """One problem. ``id`` is stable (split and terms), ``answer`` is the integer as a string."""

    id: str
    question: str
    answer: str
    split: str
    terms: tuple[int, ...]


@dataclass(frozen=True)
class SumsExample:
    """A problem with one rendered solution (pre-training corpus and SFT set)."""

    problem: SumsProblem
    strategy: str
    response: str


def make_problem(terms: tuple[int, ...] | list[int], split: str) -> SumsProblem:
    """The problem for ``terms`` in ``split`` (terms must be distinct so strategies are distinguishable)."""
    terms = tuple(int(t) for t in terms)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if len(set(terms)) != len(terms) or len(terms) < 3 or min(terms) < 1:
        raise UserError(f"terms must be at least 3 distinct positive integers, got {terms}")
    question = "+".join(str(t) for t in terms) + "=?"
    return SumsProblem(
        id=f"{split}-" + "-".join(str(t) for t in terms),
        question=question,
        answer=str(sum(terms)),
        split=split,
        terms=terms,
    )


# --- strategies as templates of binary additions --------------------------------------------------
# A step is a pair of operands; an operand is ("t", value) for a number read off the problem (a term,
# or a term's tens/ones part) or ("r", j) for the result of step j. Rendering fills in the results;
# classification matches a response's operands against the template, accepting any value for ("r", j)
# so a response with an arithmetic slip is still recognised by its strategy.
_Operand = tuple[str, int]
_Step = tuple[_Operand, _Operand]


def _running(values: list[_Operand], start: int = 0) -> list[_Step]:
    """Steps that add ``values`` up left to right; result refs are numbered from ``start``."""
    steps: list[_Step] = [(values[0], values[1])]
    for v in values[2:]:
        steps.append((("r", start + len(steps) - 1), v))
    return steps


def _template(terms: tuple[int, ...], strategy: str) -> list[_Step]:
    t = [("t", x) for x in terms]
    if strategy == "left":
        return _running(t)
    if strategy == "right":
        return _running(t[::-1])
    if strategy == "pairs":
        k = len(t)
        steps: list[_Step] = [(t[i], t[k - 1 - i]) for i in range(k // 2)]
        partial = [("r", i) for i in range(k // 2)] + ([t[k // 2]] if k % 2 else [])
        return steps + _running(partial, start=len(steps))
    if strategy == "tens":
        tens = _running([("t", x - x % 10) for x in terms])
        ones = _running([("t", x % 10) for x in terms], start=len(tens))
        return tens + ones + [(("r", len(tens) - 1), ("r", len(tens) + len(ones) - 1))]
    raise UserError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def strategies_for(problem: SumsProblem) -> tuple[str, ...]:
    """The strategies valid for ``problem`` (``tens`` needs every term to have two digits)."""
    if all(10 <= x <= 99 and x % 10 for x in problem.terms):
        return STRATEGIES
    return tuple(s for s in STRATEGIES if s != "tens")


def render_solution(problem: SumsProblem, strategy: str) -> str:
    """The step-by-step solution of ``problem`` with ``strategy``, ending in ``\\boxed{answer}``."""
    if strategy not in strategies_for(problem):
        raise UserError(
            f"strategy {strategy!r} does not apply to {problem.id}; use one of {strategies_for(problem)}"
        )
    results: list[int] = []
    lines = []
    for a, b in _template(problem.terms, strategy):
        x, y = (v if kind == "t" else results[v] for kind, v in (a, b))
        results.append(x + y)
        lines.append(f"{x}+{y}={x + y}")
    assert results[-1] == int(problem.answer), (problem, strategy)
    return "\n".join(lines) + f"\n\\boxed{{{problem.answer}}}"


_STEP_RE = re.compile(r"^(\d+)\+(\d+)=(\d+)$")
_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")


def classify_strategy(problem: SumsProblem, response: str) -> str | None:
    """Which strategy ``response`` follows for ``problem``, or None (garbage, or no strategy fits).

    A response fits a strategy when it has exactly the strategy's addition lines, each operand read
    off the problem is the right one, and it ends in a ``\\boxed{}``. Intermediate values may be wrong.
    """
    lines = response.strip().split("\n")
    if len(lines) < 2 or not _BOXED_RE.fullmatch(lines[-1].strip()):
        return None
    steps = [_STEP_RE.match(line.strip()) for line in lines[:-1]]
    if not all(steps):
        return None
    operands = [(int(m.group(1)), int(m.group(2))) for m in steps]
    for strategy in strategies_for(problem):
        template = _template(problem.terms, strategy)
        if len(template) == len(operands) and all(
            kind != "t" or got == want
            for step, pair in zip(template, operands)
            for (kind, want), got in zip(step, pair)
        ):
            return strategy
    return None


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` in ``text``, stripped; None if there is none."""
    found = _BOXED_RE.findall(text)
    return found[-1].strip() if found else None


def grade_sum(problem: SumsProblem, response: str) -> bool:
    """Whether the last boxed answer of ``response`` equals the gold integer."""
    return extract_boxed(response) == problem.answer


# --- sampling problems per role --------------------------------------------------------------------


def role_of(terms: tuple[int, ...]) -> str:
    """The role whose problems include ``terms``: a stable hash, the same for every seed."""
    key = f"v{WORLD_VERSION}:" + ",".join(str(t) for t in terms)
    bucket = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % 10
    return next(role for role, buckets in _ROLE_BUCKETS.items() if bucket in buckets)


def _random_terms(rng: random.Random, spec: SplitSpec) -> tuple[int, ...]:
    while True:
        terms = tuple(10 * rng.randint(1, 9) + rng.randint(1, 9) for _ in range(spec.n_terms))
        if len(set(terms)) == len(terms):
            return terms


def _role_pool(split: str, role: str, rng: random.Random, n: int | None) -> list[tuple[int, ...]]:
    """Distinct term tuples of ``split`` in ``role``: all of them (shuffled) for the small one-digit
    splits, else up to ``n`` drawn at random (two-digit splits have millions)."""
    spec = SPLITS[split]
    if spec.digits == 1:
        pool = [t for t in itertools.permutations(range(1, 10), spec.n_terms) if role_of(t) == role]
        rng.shuffle(pool)
        return pool if n is None else pool[:n]
    seen: dict[tuple[int, ...], None] = {}
    while len(seen) < n:
        terms = _random_terms(rng, spec)
        if role_of(terms) == role:
            seen.setdefault(terms)
    return list(seen)


def sample_problems(
    *, split: str, n: int, role: str, seed: int, allow_fewer: bool = False
) -> list[SumsProblem]:
    """``n`` distinct problems of ``split`` from ``role``'s share of the world, in a seeded order.

    The one-digit splits are small (L1 has 504 problems in all, about a fifth per role); asking for
    more than exist is an error unless ``allow_fewer``, which returns all of them instead.
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if role not in _ROLE_BUCKETS:
        raise UserError(f"unknown role {role!r}; choose one of {', '.join(_ROLE_BUCKETS)}")
    rng = random.Random(f"sedsft-demo:{seed}:{role}:{split}")
    pool = _role_pool(split, role, rng, n)
    if len(pool) < n and not allow_fewer:
        raise UserError(
            f"split {split} has only {len(pool)} {role} problems; ask for at most {len(pool)} per split"
        )
    return [make_problem(t, split) for t in pool]


# --- dataset builders ------------------------------------------------------------------------------


def build_pretrain_corpus(
    *, n_per_split: int, seed: int, strategies_per_problem: int = 2
) -> list[SumsExample]:
    """The diverse corpus: each problem rendered with ``strategies_per_problem`` distinct strategies,
    chosen uniformly among the valid ones, all splits interleaved in a seeded shuffle. A one-digit
    split with fewer than ``n_per_split`` pre-training problems contributes all it has."""
    rng = random.Random(f"sedsft-demo:{seed}:pretrain-strategies")
    examples = []
    for split in SPLITS:
        for p in sample_problems(split=split, n=n_per_split, role="pretrain", seed=seed, allow_fewer=True):
            valid = strategies_for(p)
            for s in rng.sample(valid, min(strategies_per_problem, len(valid))):
                examples.append(SumsExample(p, s, render_solution(p, s)))
    rng.shuffle(examples)
    return examples


def build_sft_set(*, n_per_split: int, seed: int, strategy: str = SFT_STRATEGY) -> list[SumsExample]:
    """The SFT set: one solution per problem, always with ``strategy`` (the mode-collapse pressure)."""
    examples = [
        SumsExample(p, strategy, render_solution(p, strategy))
        for split in SPLITS
        for p in sample_problems(split=split, n=n_per_split, role="sft", seed=seed)
    ]
    random.Random(f"sedsft-demo:{seed}:sft-order").shuffle(examples)
    return examples


def build_rl_prompts(*, n_per_split: int, seed: int, splits=tuple(SPLITS)) -> list[SumsProblem]:
    """RL prompts with gold answers from ``splits``, interleaved in a seeded shuffle."""
    problems = [
        p for split in splits for p in sample_problems(split=split, n=n_per_split, role="rl", seed=seed)
    ]
    random.Random(f"sedsft-demo:{seed}:rl-order").shuffle(problems)
    return problems


def build_eval_problems(*, n_per_split: int, seed: int = 0) -> list[SumsProblem]:
    """Held-out evaluation problems, grouped by split (the benchmark columns)."""
    return [
        p for split in SPLITS for p in sample_problems(split=split, n=n_per_split, role="eval", seed=seed)
    ]


# --- writers in the layouts the rest of sedsft reads -----------------------------------------------


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_sft_jsonl(path: str | os.PathLike, examples: list[SumsExample]) -> Path:
    """SFT data: one ``{"question", "response", ...}`` object per line."""
    records = [
        {
            "id": e.problem.id,
            "question": e.problem.question,
            "response": e.response,
            "answer": e.problem.answer,
            "split": e.problem.split,
            "strategy": e.strategy,
        }
        for e in examples
    ]
    return atomic_write_text(path, _jsonl(records))


def problem_record(p: SumsProblem) -> dict:
    """The record every reader of problems accepts: id, question, answer, benchmark (the split)."""
    return {"id": p.id, "question": p.question, "answer": p.answer, "benchmark": p.split}


def write_rl_prompts(path: str | os.PathLike, problems: list[SumsProblem]) -> Path:
    """RL prompts with ``question``/``answer``: JSONL, or Parquet when ``path`` ends in ``.parquet``."""
    records = [problem_record(p) for p in problems]
    if str(path).endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(records), sink)
        return atomic_write_bytes(path, sink.getvalue().to_pybytes())
    if not str(path).endswith(".jsonl"):
        raise UserError(f"RL prompts path must end in .jsonl or .parquet, got {path}")
    return atomic_write_text(path, _jsonl(records))


def write_eval_problems(path: str | os.PathLike, problems: list[SumsProblem]) -> Path:
    """Evaluation problems as JSONL records with id/question/answer/benchmark."""
    return atomic_write_text(path, _jsonl([problem_record(p) for p in problems]))
