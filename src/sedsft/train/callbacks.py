"""Files a run leaves in ``output_dir`` besides TRL's: the metrics log, its summary, the calibration per checkpoint.

- ``sedsft_metrics.jsonl``: one line per log event (TRL's loss, learning rate, grad norm, num_tokens, and
  the objective's mask_rate, de_penalty, gold_prob, entropy, topk_mass, top1_acc, tau), appended as
  training goes and rewritten from the trainer state at the start (so a resumed run has no duplicates)
  and at the end.
- ``sedsft_summary.json``: objective, tau, data counts, the last value of every logged metric.
- ``checkpoint-*/sedsft_calibration.json``: the tau a resumed run must reuse.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from sedsft.io import JsonlLog, atomic_write_json, atomic_write_text

METRICS_FILE = "sedsft_metrics.jsonl"
SUMMARY_FILE = "sedsft_summary.json"


class MetricsLogCallback(TrainerCallback):
    """``output_dir/<filename>``: one JSON line per log event, the rows of the trainer's ``log_history``.

    Rewritten from the trainer state when training begins, so a resumed run starts from the checkpoint's
    history (rows logged after that checkpoint by the interrupted run are dropped, not duplicated), then
    appended as training goes, and rewritten once more at the end. Main process only.
    """

    def __init__(self, filename: str):
        self.filename = filename

    def _rewrite(self, args, state) -> None:
        import json

        lines = "".join(json.dumps(r, default=str) + "\n" for r in state.log_history)
        atomic_write_text(os.path.join(args.output_dir, self.filename), lines)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._rewrite(args, state)  # on resume: the restored history, nothing after the checkpoint

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            JsonlLog(os.path.join(args.output_dir, self.filename)).append({**logs, "step": state.global_step})

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._rewrite(args, state)


class SEDSFTFilesCallback(MetricsLogCallback):
    """Writes the files above on the main process; holds a reference to its trainer for tau and the data report."""

    def __init__(self, trainer):
        super().__init__(METRICS_FILE)
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if os.path.isdir(folder):
            self.trainer._save_calibration(folder)

    def on_train_end(self, args, state, control, **kwargs):
        super().on_train_end(args, state, control, **kwargs)
        if not state.is_world_process_zero:
            return
        last: dict[str, float] = {}
        for record in state.log_history:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                    last[k] = v
        t = self.trainer
        summary = {
            "objective": args.objective,
            "options": args.objective_options(tau=t.tau)
            if (t.tau is not None or not args.needs_tau)
            else None,
            "loss_impl": t.loss_impl,
            "tau": t.tau,
            "calibration": asdict(t.calibration) if t.calibration is not None else None,
            "data": asdict(t.data_report) if t.data_report is not None else None,
            "global_step": state.global_step,
            "last": last,
        }
        atomic_write_json(os.path.join(args.output_dir, SUMMARY_FILE), summary)
