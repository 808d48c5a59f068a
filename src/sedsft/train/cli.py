"""``sedsft sft``: SFT from local files, with TRL's flags (SFTConfig, ModelConfig) plus ours (SEDSFTConfig).

    sedsft sft --model_name_or_path ./Qwen2.5-Math-7B --dataset_path data/train.jsonl --objective sed \\
        --output_dir runs/sed
    sedsft sft --config configs/paper/sft_qwen2.5-math-7b.yaml --objective ce      # flags override the YAML
    accelerate launch --config_file configs/accelerate/zero2.yaml -m sedsft.cli sft --config ...

Models, tokenizers and data are read from local paths only (``local_files_only``); the hub is never
contacted. ``--output_dir`` is a run folder (:mod:`sedsft.runs`): rerunning the same command resumes
from the last complete checkpoint (a finished run is only reported); another objective, other
settings, another model or data are refused there unless ``--overwrite``, which starts over in an
emptied folder. Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import logging
import os
import sys

from sedsft.cli_parse import CommandParser, RunOptions, TrainModelOptions
from sedsft.errors import UserError

logger = logging.getLogger("sedsft.train")

DESCRIPTION = (
    "Supervised fine-tuning with CE, DFT, GEM or SED-SFT on local chat data. Every TrainingArguments / "
    "SFTConfig flag is accepted; `--config file.yaml` sets defaults that flags override."
)


def build_parser() -> CommandParser:
    from .config import SEDSFTConfig

    return CommandParser("sft", (SEDSFTConfig, TrainModelOptions, RunOptions), description=DESCRIPTION)


def _resume_value(value):
    if isinstance(value, str) and value.lower() in ("true", "last"):
        return True
    if isinstance(value, str):
        from sedsft.runs import check_checkpoint

        return check_checkpoint(value)
    return value


def _check_lengths(records, model_path: str, args) -> None:
    """``--overflow error``: every record within the trainer's token limit (sedsft.limits.token_limit)."""
    from sedsft.data import check_records_fit
    from sedsft.limits import local_token_limit

    tokenizer, limit = local_token_limit(
        model_path, max_length=args.max_length, max_length_wins=True, trust_remote_code=args.trust_remote_code
    )
    if args.chat_template_path is not None and os.path.isfile(args.chat_template_path):
        with open(args.chat_template_path, encoding="utf-8") as f:
            tokenizer.chat_template = f.read()
    check_records_fit(records, tokenizer, limit=limit, system_prompt=args.system_prompt)


def main(argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local paths only; set before the hub library reads it
    args, model_args, run_options = build_parser().parse(argv)
    from trl import get_peft_config

    from sedsft.data import load_records, to_conversation
    from sedsft.models import check_model, check_peft_targets, load_training_model
    from sedsft.runs import RunSpec, last_checkpoint, open_training_run, training_settings

    from .trainer import SEDSFTTrainer

    is_main = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("sedsft").setLevel(logging.INFO if is_main else logging.WARNING)

    if not args.dataset_path:
        raise UserError("--dataset_path is required: a local .jsonl/.json/.parquet file or folder")
    records = load_records(args.dataset_path)  # data errors surface before the (slow) model load
    eval_records = load_records(args.eval_dataset_path) if args.eval_dataset_path else None
    for record in records + (eval_records or []):
        to_conversation(record, system_prompt=args.system_prompt)  # layout errors, also before the model load
    path = check_model(  # weights, code and chat template, before the run folder is opened
        model_args.model_name_or_path,
        trust_remote_code=args.trust_remote_code,
        chat_template_path=args.chat_template_path,
        system_prompt=args.system_prompt,
    )
    check_peft_targets(path, get_peft_config(model_args), trust_remote_code=args.trust_remote_code)
    resume = _resume_value(args.resume_from_checkpoint)
    if args.overflow == "error":  # a record too long is refused before the run folder or the model
        _check_lengths(records + (eval_records or []), path, args)
    spec = RunSpec(
        "sft",
        settings=training_settings(args, model_args),
        inputs={
            "model": path,
            "data": args.dataset_path,
            "eval_data": args.eval_dataset_path,
            "chat_template": args.chat_template_path,
        },
    )
    run = open_training_run(args, spec, overwrite=run_options.overwrite, wait=run_options.wait)
    if run.finished:
        if run.main_process:
            print(
                f"sedsft sft: {args.output_dir} holds this finished run; nothing to do (--overwrite trains again)"
            )
        return 0
    if resume is True or (resume is None and run.resumed):
        asked, resume = resume is True, last_checkpoint(args.output_dir)
        if asked and resume is None:
            raise UserError(f"--resume_from_checkpoint true: no complete checkpoint in {args.output_dir}")
        if resume is not None and is_main:  # None: interrupted before its first checkpoint, start again
            logger.info("resuming from %s", resume)

    model, tokenizer = load_training_model(
        model_args, trust_remote_code=args.trust_remote_code, chat_template_path=args.chat_template_path
    )
    trainer = SEDSFTTrainer(
        model,
        args=args,
        train_dataset=records,  # tokenized by the trainer: sedsft.data, counted in trainer.data_report
        eval_dataset=eval_records,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    if is_main:
        logger.info(
            "objective=%s loss_impl=%s output_dir=%s", args.objective, trainer.loss_impl, args.output_dir
        )
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(args.output_dir)  # final weights (or adapter) and tokenizer
    run.mark_finished()
    if is_main:
        logger.info("saved the model, tokenizer and sedsft_metrics.jsonl to %s", args.output_dir)
    return 0
