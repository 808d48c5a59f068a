"""Inputs of every size and type: refused in one line (exit 2, nothing written) or bounded, never a crash.

Records longer than the model's context (200,000 characters against a 512-position model) are cut,
dropped or refused per ``--overflow`` before any tensor is made; a 1 GB input file (one huge line) is
refused at its line without being read whole, in bounded memory; a text field holding a number or a
list is refused naming file, line and field. Each row runs a command in this process, as
tests/test_cli_errors.py does; the 1 GB file also runs in real processes that report their peak memory.
"""

from __future__ import annotations

import json

import pytest

from sedsft.cli import main

from .real_cli import one_error_line, run_sedsft
from .tiny import char_tokenizer, tiny_llama

CONTEXT = 512  # the tiny model's max_position_embeddings
LONG = "x" * 200_000  # 200,000 tokens for the character tokenizer
GB = 2**30


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """A tiny chat checkpoint, data files with one overlong record each, type errors, a 1 GB file."""
    d = tmp_path_factory.mktemp("inputs")
    tok = char_tokenizer()
    model = tiny_llama(tok, max_position_embeddings=CONTEXT)
    model.save_pretrained(d / "ckpt")
    tok.save_pretrained(d / "ckpt")
    good = {"question": "1+1?", "answer": "2", "response": "The answer is \\boxed{2}."}
    _jsonl(d / "long.jsonl", good, {"question": "q", "answer": "2", "response": LONG})
    _jsonl(d / "longq.jsonl", good, {"question": LONG, "answer": "2"})
    (d / "bench" / "math500").mkdir(parents=True)
    _jsonl(
        d / "bench" / "math500" / "test.jsonl",
        {"problem": "1+1?", "answer": "2", "unique_id": "easy"},
        {"problem": LONG, "answer": "2", "unique_id": "huge"},
    )
    for name, record in TYPE_ERRORS.items():
        _jsonl(d / f"{name}.jsonl", {"question": "1+1?", "answer": "2"}, record[0])
    with open(d / "huge.jsonl", "wb") as f:  # a 1 GB file, sparse: a good record, then one huge line
        f.write((json.dumps(good) + "\n").encode())
        f.write(b'{"question": "q", "response": "')
        f.seek(GB)
        f.write(b'"}\n')
    return d


def _jsonl(path, *records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _refused(argv: list[str], d, capsys) -> str:
    """Run ``argv`` here; it must exit 2 with one ``sedsft <command>: error:`` line and write nothing."""
    argv = [a.format(d=d) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"sedsft {argv[0]}: error: "), err
    assert not (d / "out").exists() and not (d / "out.json").exists()  # refused before anything was written
    return err[0]


M, OUT = "{d}/ckpt", "{d}/out"
SFT = ["sft", "--model", M, "--output_dir", OUT, "--use_cpu", "--report_to", "none", "--tau", "0.5"]
GRPO = ["grpo", "--model", M, "--output_dir", OUT, "--use_cpu", "--use_vllm", "false"]
FILTER = ["filter", "--model", M, "--output_dir", OUT, "--grading_workers", "0"]
CALIBRATE = ["calibrate", "--model", M, "--output", "{d}/out.json"]
TOPK = ["analyze", "topk", "--model", M, "--output_dir", OUT]
EXPORT = ["export-verl", "--output_dir", OUT]
TOO_LONG = f"is longer than {CONTEXT} tokens (the model's context, max_position_embeddings)"
BY_OPTION = "is longer than 1024 tokens (--max_length); shorten the record, raise --max_length"

OVERLONG = {  # --overflow error (eval's default): the record, named by file and line, before any write
    "sft": (  # sft's --max_length, 1024 by default, is kept even past the context (the paper's recipe)
        [*SFT, "--data", "{d}/long.jsonl", "--overflow", "error"],
        f"long.jsonl:2: the conversation {BY_OPTION}",
    ),
    "sft max_length none": (
        [*SFT, "--data", "{d}/long.jsonl", "--overflow", "error", "--max_length", "none"],
        f"long.jsonl:2: the conversation {TOO_LONG}",
    ),
    "calibrate": (  # as sft
        [*CALIBRATE, "--data", "{d}/long.jsonl", "--overflow", "error"],
        f"long.jsonl:2: the conversation {BY_OPTION}",
    ),
    "analyze topk": (
        [*TOPK, "--data", "{d}/long.jsonl", "--overflow", "error", "--max_length", "none"],
        f"long.jsonl:2: the conversation {TOO_LONG}",
    ),
    "analyze topk past the context": (  # analyses are bounded by the context whatever --max_length says
        [*TOPK, "--data", "{d}/long.jsonl", "--overflow", "error", "--max_length", "100000"],
        f"long.jsonl:2: the conversation {TOO_LONG}",
    ),
    "grpo": (
        [*GRPO, "--data", "{d}/longq.jsonl", "--overflow", "error"],
        f"longq.jsonl:2: the prompt {TOO_LONG}",
    ),
    "filter": (
        [*FILTER, "--data", "{d}/longq.jsonl", "--overflow", "error"],
        f"longq.jsonl:2: the prompt {TOO_LONG}",
    ),
    "eval (default)": (
        ["eval", "--model", M, "--benchmarks", "math", "--data_dir", "{d}/bench", "--output_dir", OUT],
        f"math problem huge: the question {TOO_LONG}",
    ),
}

TYPE_ERRORS = {  # a text field holding a number or a list: file, line and field
    "question_number": (
        {"question": 5, "answer": "2"},
        "question_number.jsonl:2: field 'question' must be text, got a number (5)",
    ),
    "prompt_list": (
        {"prompt": [1, 2], "answer": "2"},
        "prompt_list.jsonl:2: field 'prompt' must be text or a list of chat messages, got a list",
    ),
    "content_list": (
        {"prompt": [{"role": "user", "content": ["a"]}], "answer": "2"},
        "content_list.jsonl:2: field 'prompt': message 0 content must be text, got a list",
    ),
    "solution_list": (
        {"problem": "q", "solution": ["\\boxed{2}"]},
        "solution_list.jsonl:2: field 'solution' must be text, got a list",
    ),
    "reward_model_list": (
        {"prompt": [{"role": "user", "content": "q"}], "reward_model": ["2"]},
        "reward_model_list.jsonl:2: field 'reward_model' must be an object with 'ground_truth', got a list",
    ),
}

HUGE_LINE = "huge.jsonl:2: the line is longer than 64 MiB"
HUGE = {  # the 1 GB file: refused at its line, which is never read whole, parsed or tokenized
    "sft": [*SFT, "--data", "{d}/huge.jsonl"],
    "calibrate": [*CALIBRATE, "--data", "{d}/huge.jsonl"],
    "analyze topk": [*TOPK, "--data", "{d}/huge.jsonl"],
    "grpo": [*GRPO, "--data", "{d}/huge.jsonl"],
    "filter": [*FILTER, "--data", "{d}/huge.jsonl"],
    "export-verl": [*EXPORT, "--data", "{d}/huge.jsonl"],
}


@pytest.mark.parametrize("case", list(OVERLONG))
def test_overlong_record_is_refused_with_overflow_error(d, capsys, case):
    argv, message = OVERLONG[case]
    assert message in _refused(argv, d, capsys)


@pytest.mark.parametrize("case", list(TYPE_ERRORS))
@pytest.mark.parametrize("command", ["export-verl", "filter", "grpo"])
def test_text_field_of_another_type_names_file_line_and_field(d, capsys, case, command):
    base = {"export-verl": EXPORT, "filter": FILTER, "grpo": GRPO}[command]
    assert TYPE_ERRORS[case][1] in _refused([*base, "--data", f"{{d}}/{case}.jsonl"], d, capsys)


@pytest.mark.parametrize("case", list(HUGE))
def test_a_1gb_file_is_refused_at_its_huge_line(d, capsys, case):
    assert HUGE_LINE in _refused(HUGE[case], d, capsys)


def test_overlong_records_are_truncated_by_default(d, tmp_path):
    """calibrate at its --max_length, analyze topk with no --max_length or one far past the context:
    bounded before scoring, they run (unbounded, a 200,000-token sequence asks for a 10 GB attention mask)."""
    out = tmp_path / "cal.json"
    argv = ["calibrate", "--model", str(d / "ckpt"), "--data", str(d / "long.jsonl"), "--output", str(out)]
    assert main(argv) == 0
    assert json.loads(out.read_text())["num_sequences"] == 2  # the long record too, cut at 1024 tokens
    topk = ["analyze", "topk", "--model", str(d / "ckpt"), "--data", str(d / "long.jsonl")]
    for i, max_length in enumerate(["none", "100000"]):
        assert main([*topk, "--max_length", max_length, "--output_dir", str(tmp_path / f"topk{i}")]) == 0


def test_overlong_prompts_are_dropped_by_default(d, tmp_path, caplog):
    """filter (like grpo) leaves out a prompt that does not fit the context, and says so."""
    argv = [*FILTER, "--data", "{d}/longq.jsonl", "--n", "2", "--max_new_tokens", "2"]
    argv = [a.format(d=d) for a in argv]
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "filter")
    assert main(argv) == 0
    rates = (tmp_path / "filter" / "solve_rates.jsonl").read_text().splitlines()
    assert len(rates) == 1 and "1 of 2 prompts dropped" in caplog.text and "longq.jsonl:2" in caplog.text


RSS_SCRIPT = """
import resource, sys
import sedsft.cli, sedsft.data, sedsft.rl.verl_cli, sedsft.train.trainer  # what the commands import
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
code = sedsft.cli.main(sys.argv[1:])
print("rss_kib", before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


@pytest.mark.parametrize("case", ["sft", "export-verl"])
def test_a_1gb_file_in_a_real_process_stays_in_bounded_memory(d, case):
    proc = run_sedsft(*[a.format(d=d) for a in HUGE[case]], script=RSS_SCRIPT)
    assert HUGE_LINE in one_error_line(proc, case)
    before, peak = (int(v) * 1024 for v in proc.stdout.split("rss_kib")[1].split())
    # past the imports, the command's own peak: the 64 MiB it reads of the huge line, not the 1 GiB file
    assert peak - before < 256 * 2**20, (before, peak)
