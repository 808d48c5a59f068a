"""``sedsft sft``: SFT from local files, with TRL's flags (SFTConfig, ModelConfig) plus ours (SEDSFTConfig).

    sedsft sft --model_name_or_path ./Qwen2.5-Math-7B --dataset_path data/train.jsonl --objective sed \\
        --output_dir runs/sed
    sedsft sft --config configs/paper/sft_qwen2.5-math-7b.yaml --objective ce      # flags override the YAML
    accelerate launch --config_file configs/accelerate/zero2.yaml -m sedsft.cli sft --config ...

Models, tokenizers and data are read from local paths only (``local_files_only``); the hub is never
contacted. Bad input ends with one line on stderr and exit code 2 (the dispatcher prints our errors).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from sedsft.errors import UserError
from sedsft.models import check_local_model

logger = logging.getLogger("sedsft.train")

DESCRIPTION = (
    "Supervised fine-tuning with CE, DFT, GEM or SED-SFT on local chat data. Every TrainingArguments / "
    "SFTConfig flag is accepted; `--config file.yaml` sets defaults that flags override."
)


def _parser():
    from trl import ModelConfig, TrlParser

    from .config import SEDSFTConfig

    class Parser(TrlParser):
        def error(self, message):  # one line instead of argparse's multi-page usage
            raise UserError(f"{message} (see sedsft sft --help)")

    return Parser((SEDSFTConfig, ModelConfig), prog="sedsft sft", description=DESCRIPTION)


def _load_model_and_tokenizer(model_args, args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_quantization_config

    path = check_local_model(model_args.model_name_or_path, flag="--model_name_or_path")
    tokenizer = AutoTokenizer.from_pretrained(
        path, trust_remote_code=args.trust_remote_code, local_files_only=True
    )
    if args.chat_template_path:
        if not os.path.isfile(args.chat_template_path):
            raise UserError(f"--chat_template_path {args.chat_template_path!r} is not a local .jinja file")
        with open(args.chat_template_path, encoding="utf-8") as f:
            tokenizer.chat_template = f.read()
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    quantization = get_quantization_config(model_args)
    model = AutoModelForCausalLM.from_pretrained(
        path,
        dtype=dtype,
        attn_implementation=model_args.attn_implementation,
        trust_remote_code=args.trust_remote_code,
        local_files_only=True,
        quantization_config=quantization,
        # k-bit weights are placed on this process's GPU at load time (as TRL's scripts do)
        device_map={"": int(os.environ.get("LOCAL_RANK", "0"))} if quantization is not None else None,
    )
    return model, tokenizer


def _resume_value(value):
    if isinstance(value, str) and value.lower() in ("true", "last"):
        return True
    if isinstance(value, str) and not os.path.isdir(value):
        raise UserError(
            f"--resume_from_checkpoint {value!r} is not a checkpoint folder (or pass 'true' for the last)"
        )
    return value


def main(argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local paths only; set before the hub library reads it
    with warnings.catch_warnings():  # TrainingArguments' deprecation notices for flags nobody set
        warnings.simplefilter("ignore", FutureWarning)
        args, model_args = _parser().parse_args_and_config(argv)
    from trl import get_peft_config

    from sedsft.data import load_records, to_conversation

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
    model, tokenizer = _load_model_and_tokenizer(model_args, args)
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
    trainer.train(resume_from_checkpoint=_resume_value(args.resume_from_checkpoint))
    trainer.save_model(args.output_dir)  # final weights (or adapter) and tokenizer
    if is_main:
        logger.info("saved the model, tokenizer and sedsft_metrics.jsonl to %s", args.output_dir)
    return 0
