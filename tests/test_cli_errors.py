"""Every command refuses bad input in one line (exit 2) before loading a model or writing anything.

A table of cheap failing invocations, one or more per class of problem (meaningless values, conflicting
or unknown options, an unavailable device, broken YAML, broken or non-UTF-8 data, a model folder
without a tokenizer, with truncated weights, without a chat template or needing its own code, a folder
holding something else), run in this process; a few run in a real process too (exit status, exactly
one stderr line, no traceback).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from sedsft.cli import main

from .real_cli import one_error_line, run_sedsft
from .tiny import CHATML, char_tokenizer, tiny_llama

NO_CUDA_7 = torch.cuda.device_count() <= 7


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Input files: a good data file, broken ones, a model folder without a tokenizer, a foreign folder."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "data.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "2", "response": "2"}) + "\n")
    (d / "latin1.jsonl").write_bytes(b'{"question": "q", "response": "r"}\n{"question": "caf\xe9"}\n')
    (d / "array.jsonl").write_text('{"question": "q", "answer": "1"}\n[1, 2]\n')
    (d / "broken.yaml").write_text("n: 2\ntemperature: [1\n")
    (d / "broken.jinja").write_text("{% for m in messages %}{{ m.content }")
    (d / "unknown.yaml").write_text("n: 2\ntemperatur: 1\n")
    (d / "bench" / "math500").mkdir(parents=True)  # a benchmark file saved in Latin-1 on line 2
    (d / "bench" / "math500" / "test.jsonl").write_bytes(
        b'{"problem": "1+1?", "answer": "2"}\n{"problem": "caf\xe9?", "answer": "3"}\n'
    )
    (d / "bench" / "gsm8k").mkdir()
    (d / "bench" / "gsm8k" / "test.jsonl").write_text(
        json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n"
    )
    foreign = d / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("precious")
    _model_folders(d)
    return d


def _model_folders(d):
    """A good tiny checkpoint, and copies of it with one thing wrong each."""
    tok = char_tokenizer()
    tiny_llama(tok).save_pretrained(d / "good")
    tok.save_pretrained(d / "good")
    for name in ("no_tokenizer", "truncated", "no_template", "remote_code", "no_weights", "no_system_turn"):
        shutil.copytree(d / "good", d / name)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (d / "no_tokenizer" / name).unlink()
    (d / "no_weights" / "model.safetensors").unlink()
    shutil.copytree(
        d / "good", d / "stopped_run" / "checkpoint-3"
    )  # an sft run stopped before its final save
    (d / "stopped_run" / "checkpoint-3" / "trainer_state.json").write_text("{}")
    (d / "no_system_turn" / "chat_template.jinja").write_text(  # as Gemma's and Mistral's templates do
        "{%- if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        + CHATML
    )
    weights = d / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a download cut short
    (d / "no_template" / "chat_template.jinja").unlink()  # a base model's tokenizer
    config = json.loads((d / "remote_code" / "config.json").read_text())
    config.update(model_type="my_arch", auto_map={"AutoConfig": "my_code.MyConfig"})
    (d / "remote_code" / "config.json").write_text(json.dumps(config))
    (d / "remote_code" / "my_code.py").write_text('raise SystemExit("the folder\'s code ran")\n')


def _cases():
    m, data, out = "{d}/no_tokenizer", "{d}/data.jsonl", "{d}/out"
    filt = ["filter", "--model", m, "--data", data, "--output_dir", out]
    ev = ["eval", "--model", m, "--output_dir", out]
    topk = ["analyze", "topk", "--model", m, "--data", data, "--output_dir", out]
    heat = ["analyze", "heatmap", "--model", m, "--data", data, "--index", "0", "--output_dir", out]
    sft = ["sft", "--model", m, "--data", data, "--output_dir", out, "--use_cpu"]
    grpo = ["grpo", "--model", m, "--data", data, "--output_dir", out, "--use_cpu", "--use_vllm", "false"]
    return {
        # meaningless values, refused where the config is built
        "filter temperature nan": (
            [*filt, "--temperature", "nan"],
            "temperature must be a finite number >= 0, got nan",
        ),
        "filter n 0": ([*filt, "--n", "0"], "n must be an integer >= 1, got 0"),
        "eval grading_timeout nan": (
            [*ev, "--grading_timeout", "nan"],
            "grading_timeout must be a finite number > 0",
        ),
        "eval top_p 2": ([*ev, "--top_p", "2"], "top_p must be a finite number in (0, 1], got 2.0"),
        "grpo num_generations 0": (
            [*grpo, "--num_generations", "0"],
            "num_generations must be an integer >= 2",
        ),
        "grpo reward_timeout_s nan": (
            [*grpo, "--reward_timeout_s", "nan"],
            "reward_timeout_s must be a finite number > 0",
        ),
        "grpo negative epsilon": ([*grpo, "--epsilon", "-0.1"], "epsilon must be a finite number >= 0"),
        "sft learning_rate nan": (
            [*sft, "--learning_rate", "nan"],
            "learning_rate must be a finite number, got nan",
        ),
        "heatmap tau nan": ([*heat, "--tau", "nan"], "tau must be a finite number >= 0"),
        "heatmap tau negative": ([*heat, "--tau", "-0.5"], "tau must be a finite number >= 0"),
        "topk mask_ratios": (
            [*topk, "--mask_ratios", "0.5,1.5"],
            "mask_ratios must be a finite number in [0, 1]",
        ),
        "calibrate mask_ratio": (
            ["calibrate", "--model", m, "--data", data, "--mask_ratio", "1.5"],
            "mask_ratio",
        ),
        "demo seeds 0": (["demo", "--seeds", "0"], "seeds must be an integer >= 1, got 0"),
        # conflicting options
        "heatmap tau and mask_ratio": ([*heat, "--tau", "0.5", "--mask_ratio", "0.7"], "not both"),
        "sft tau and mask_ratio": (
            [*sft, "--tau", "0.5", "--mask_ratio", "0.5"],
            "give --tau (a fixed threshold) or --mask_ratio (tau calibrated), not both",
        ),
        "export val_data and val_fraction": (
            ["export-verl", "--data", data, "--output_dir", out, "--val_data", data, "--val_fraction", "0.1"],
            "give --val_data or --val_fraction, not both",
        ),
        "sweep grid twice": (
            ["sweep", "--pipeline", "x:y", "--output_dir", out, "--grid", "r=0.5", "k=2", "--top_ks", "2"],
            "give the grid once",
        ),
        "eval model and responses": ([*ev, "--responses", data], "one of them"),
        "system prompt twice": (
            [*filt, "--system_prompt", "x", "--no_system_prompt"],
            "use --system_prompt none",
        ),
        "progress twice": (["demo", "--progress", "--no_progress"], "--progress and --no_progress both set"),
        "option twice": ([*filt, "--n", "2", "--n", "3"], "--n is given twice"),
        # unknown options and old spellings
        "unknown option": ([*filt, "--num_generations", "4"], "unknown option --num_generations"),
        "grpo resume never": ([*grpo, "--resume", "never"], "--resume is not an option any more"),
        "calibrate old flag": (
            ["calibrate", "--model", m, "--data", data, "--num_examples", "8"],
            "use --calibration_examples",
        ),
        "analyze no tool": (["analyze", "--model", m], "choose a tool"),
        # an unavailable device
        "eval cuda:7": ([*ev, "--device", "cuda:7"], "--device cuda:7"),
        "topk no such device": ([*topk, "--device", "gpu0"], "--device 'gpu0' is not a device"),
        "selfcheck cuda:7": (["selfcheck", "--device", "cuda:7"], "--device cuda:7"),
        # YAML
        "broken yaml": ([*filt, "--config", "{d}/broken.yaml"], "broken.yaml:2: broken YAML"),
        "unknown yaml key": (
            [*filt, "--config", "{d}/unknown.yaml"],
            "unknown.yaml:2: unknown option 'temperatur'",
        ),
        "missing yaml": ([*sft, "--config", "{d}/nope.yaml"], "--config {d}/nope.yaml: no such file"),
        # data files
        "non-UTF-8 data": (
            [*filt[:3], "--data", "{d}/latin1.jsonl", *filt[5:]],
            "latin1.jsonl:2: not UTF-8 text (byte 0xe9 at column 18)",
        ),
        "array line": (
            [*filt[:3], "--data", "{d}/array.jsonl", *filt[5:]],
            "array.jsonl:2: expected a JSON object per record, got a JSON list",
        ),
        "benchmark not UTF-8": (
            [
                "eval",
                "--model",
                "{d}/good",
                "--data_dir",
                "{d}/bench",
                "--benchmarks",
                "math500",
                "--output_dir",
                out,
            ],
            "math500/test.jsonl:2: not UTF-8 text (byte 0xe9 at column 17)",
        ),
        "sft non-UTF-8": (
            [*sft[:3], "--data", "{d}/latin1.jsonl", *sft[5:]],
            "latin1.jsonl:2: not UTF-8 text",
        ),
        # model folders
        "no tokenizer (filter)": (filt, "no_tokenizer has no tokenizer"),
        "no tokenizer (calibrate)": (["calibrate", "--model", m, "--data", data], "has no tokenizer"),
        "no tokenizer (sft)": (sft, "has no tokenizer"),
        "no tokenizer (grpo)": (grpo, "has no tokenizer"),
        "truncated weights (eval)": (
            [*ev[:2], "{d}/truncated", *ev[3:]],
            "weights file {d}/truncated/model.safetensors is damaged",
        ),
        "truncated weights (sft)": ([*sft[:2], "{d}/truncated", *sft[3:]], "model.safetensors is damaged"),
        "no chat template (eval)": (
            [*ev[:2], "{d}/no_template", *ev[3:]],
            "the tokenizer in {d}/no_template has no chat template",
        ),
        "no chat template (grpo)": ([*grpo[:2], "{d}/no_template", *grpo[3:]], "has no chat template"),
        "no chat template (calibrate)": (
            ["calibrate", "--model", "{d}/no_template", "--data", data],
            "has no chat template",
        ),
        "remote code (grpo)": (
            [*grpo[:2], "{d}/remote_code", *grpo[3:]],
            "ships its own Python code for its model (auto_map in its config); sedsft runs it only with "
            "--trust_remote_code",
        ),
        "stopped sft run (eval)": (
            [*ev[:2], "{d}/stopped_run", *ev[3:]],
            "it holds training checkpoints: pass one, e.g. --model {d}/stopped_run/checkpoint-3",
        ),
        "no weights (filter)": ([*filt[:2], "{d}/no_weights", *filt[3:]], "has config.json but no weights"),
        "template refuses a system turn (eval)": (
            [*ev[:2], "{d}/no_system_turn", *ev[3:]],
            "refuses a system turn (System role not supported); pass --system_prompt none",
        ),
        "template refuses a system turn (sft)": (
            [*sft[:2], "{d}/no_system_turn", *sft[3:]],
            "pass --system_prompt none",
        ),
        "lora target the model lacks (sft)": (
            [*sft[:2], "{d}/good", *sft[3:], "--use_peft", "--lora_target_modules", "qkv_proj"],
            "name modules of this model, or pass all-linear",
        ),
        "lora target the model lacks (grpo)": (
            [*grpo[:2], "{d}/good", *grpo[3:], "--use_peft", "--lora_target_modules", "wq", "wk"],
            "--lora_target_modules: Target modules",
        ),
        "broken chat template file (sft)": (
            [*sft[:2], "{d}/good", *sft[3:], "--chat_template_path", "{d}/broken.jinja"],
            "the chat template of --chat_template_path {d}/broken.jinja cannot render a prompt",
        ),
        "resume from a folder that is no checkpoint (sft)": (
            [*sft[:2], "{d}/good", *sft[3:], "--resume_from_checkpoint", "{d}/thesis"],
            "--resume_from_checkpoint {d}/thesis is not a complete checkpoint (no trainer_state.json)",
        ),
        "resume from a run folder (grpo)": (
            [*grpo[:2], "{d}/good", *grpo[3:], "--resume_from_checkpoint", "{d}/stopped_run"],
            "pass one of its checkpoints, e.g. {d}/stopped_run/checkpoint-3",
        ),
        "remote code (eval)": ([*ev[:2], "{d}/remote_code", *ev[3:]], "only with --trust_remote_code"),
        # output folders and files whose parent is a file
        "calibrate output under a file": (
            ["calibrate", "--model", m, "--data", data, "--output", "{d}/data.jsonl/tau.json"],
            "--output {d}/data.jsonl/tau.json: {d}/data.jsonl is a file, so nothing can be made in it",
        ),
        "demo cache_dir under a file": (
            ["demo", "--quick", "--output_dir", out, "--cache_dir", "{d}/data.jsonl/cache"],
            "--cache_dir {d}/data.jsonl/cache: {d}/data.jsonl is a file",
        ),
        "demo output_dir under a file": (
            ["demo", "--quick", "--output_dir", "{d}/data.jsonl/demo", "--cache_dir", "{d}/cache"],
            "--output_dir {d}/data.jsonl/demo: {d}/data.jsonl is a file",
        ),
        "eval output_dir under a file": (
            [
                *ev[:2],
                "{d}/good",
                "--output_dir",
                "{d}/data.jsonl/x",
                "--data_dir",
                "{d}/bench",
                "--benchmarks",
                "gsm8k",
            ],
            "--output_dir {d}/data.jsonl/x: {d}/data.jsonl is a file",
        ),
        "eval responses output_dir under a file": (
            ["eval", "--responses", data, "--output_dir", "{d}/data.jsonl/x", "--grading_workers", "0"],
            "{d}/data.jsonl is a file",
        ),
        "sft output_dir under a file": (
            [*sft[:2], "{d}/good", *sft[3:5], "--output_dir", "{d}/data.jsonl/x", "--use_cpu"],
            "{d}/data.jsonl is a file",
        ),
        "grpo output_dir under a file": (
            [*grpo[:2], "{d}/good", *grpo[3:5], "--output_dir", "{d}/data.jsonl/x", *grpo[7:]],
            "{d}/data.jsonl is a file",
        ),
        "export-verl output_dir under a file": (
            ["export-verl", "--data", data, "--output_dir", "{d}/data.jsonl/x"],
            "{d}/data.jsonl is a file",
        ),
        "topk output_dir under a file": (
            [*topk[:3], "{d}/good", *topk[4:6], "--output_dir", "{d}/data.jsonl/x"],
            "{d}/data.jsonl is a file",
        ),
        "output_dir is a file": (
            ["export-verl", "--data", data, "--output_dir", data],
            "--output_dir {d}/data.jsonl is a file, not a folder",
        ),
        "foreign folder": (
            ["export-verl", "--data", data, "--output_dir", "{d}/thesis"],
            "thesis is not empty (chapter1.tex, ...) and holds no sedsft run",
        ),
    }


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line(files, capsys, case):
    argv, message = CASES[case]
    if "cuda:7" in argv and not NO_CUDA_7:
        pytest.skip("this machine has a cuda:7")
    argv = [a.format(d=files) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    command = argv[0]
    assert len(err) == 1 and err[0].startswith(f"sedsft {command}: error: "), err
    assert message.format(d=files) in err[0], err[0]
    assert not (files / "out").exists()  # refused before anything was written


@pytest.mark.parametrize("case", ["eval cuda:7", "broken yaml", "no tokenizer (filter)", "non-UTF-8 data"])
def test_bad_input_in_a_real_process(files, case):
    argv, message = CASES[case]
    if "cuda:7" in argv and not NO_CUDA_7:
        pytest.skip("this machine has a cuda:7")
    line = one_error_line(run_sedsft(*[a.format(d=files) for a in argv]), argv[0])
    assert message.format(d=files) in line


@pytest.fixture(scope="module")
def eval_run(files, tmp_path_factory):
    """A finished `sedsft eval` run folder of the tiny model (3 problems, 2 new tokens each)."""
    data = tmp_path_factory.mktemp("bench")
    (data / "gsm8k").mkdir()
    rows = [{"question": f"{i}+1?", "answer": f"#### {i + 1}"} for i in range(3)]
    (data / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path_factory.mktemp("runs") / "eval"

    def command(output_dir):
        argv = ["eval", "--model", str(files / "good"), "--data_dir", str(data), "--benchmarks", "gsm8k"]
        argv += ["--backend", "hf", "--device", "cpu", "--max_new_tokens", "2", "--batch_size", "1"]
        return [*argv, "--grading_workers", "0", "--progress", "false", "--output_dir", str(output_dir)]

    assert main(command(out)) == 0
    return command, out


@pytest.mark.parametrize(
    "line,message",
    [
        ('{"question": "q", "response": "r"}', "samples.jsonl:2: not a record of this file (no 'benchmark'"),
        (
            '{"benchmark": "gsm8k", "problem_id": "1", "sample_index": "0"}',
            "no 'sample_index' field of type int",
        ),
        ('{"benchmark": "gsm8k", "probl', "samples.jsonl:2: corrupt JSONL record"),
        ("[1, 2]", "samples.jsonl:2: a JSON object per line, got list"),
    ],
)
def test_a_damaged_sample_log_is_one_line_and_kept(eval_run, tmp_path, capsys, line, message):
    command, finished = eval_run
    out = tmp_path / "eval"
    shutil.copytree(finished, out)
    (out / "results.md").unlink()  # so the rerun reads the samples again
    lines = (out / "samples.jsonl").read_text().splitlines()
    (out / "samples.jsonl").write_text("\n".join([lines[0], line, *lines[2:]]) + "\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(command(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sedsft eval: error: "), err
    assert message in err[0] and "remove or fix that line" in err[0], err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written or lost


@pytest.mark.skipif(torch.cuda.is_available(), reason="the Triton kernels run on this machine's GPU")
@pytest.mark.parametrize("loss_impl", ["fused", "logits"])  # tau's calibration runs on the fused engine too
@pytest.mark.parametrize("engine", ["triton", "chunked", "recompute"])
def test_triton_where_it_cannot_run_is_refused_at_config(files, capsys, monkeypatch, loss_impl, engine):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the tests' interpreter is not a user's machine
    argv = [
        "sft",
        "--model",
        f"{files}/good",
        "--data",
        f"{files}/data.jsonl",
        "--output_dir",
        f"{files}/out",
    ]
    assert main([*argv, "--fused_impl", engine, "--loss_impl", loss_impl]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"sedsft sft: error: --fused_impl: impl='{engine}' cannot run here"
    )
    assert not (files / "out").exists()


def test_one_lora_target_by_name_is_found(files):
    # TRL hands a single target to PEFT as a regex of the full module path, which a plain name never matches
    from trl import get_peft_config

    from sedsft.models import check_peft_targets
    from sedsft.train.cli import build_parser

    argv = [
        "--model",
        f"{files}/good",
        "--data",
        "x",
        "--output_dir",
        f"{files}/out",
        "--use_cpu",
        "--use_peft",
    ]
    _, model_args, _ = build_parser().parse([*argv, "--lora_target_modules", "q_proj"])
    assert model_args.lora_target_modules == ["q_proj"]
    check_peft_targets(f"{files}/good", get_peft_config(model_args))  # found: no error
    _, model_args, _ = build_parser().parse([*argv, "--lora_target_modules", "all-linear"])
    assert model_args.lora_target_modules == "all-linear"


@pytest.mark.skipif(torch.cuda.is_available(), reason="FlashAttention may run on this machine's GPU")
def test_flash_attention_on_cpu_is_refused_at_config(files, capsys):
    argv = [
        "sft",
        "--model",
        f"{files}/good",
        "--data",
        f"{files}/data.jsonl",
        "--output_dir",
        f"{files}/out",
    ]
    assert main([*argv, "--attn_implementation", "flash_attention_2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "sedsft sft: error: --attn_implementation flash_attention_2 runs on CUDA GPUs only; use "
        "--attn_implementation sdpa here"
    ]
    assert not (files / "out").exists()
