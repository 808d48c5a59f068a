"""SFT with any objective of :mod:`sedsft.losses` on top of TRL's ``SFTTrainer``.

from sedsft.train import SEDSFTConfig, SEDSFTTrainer
args = SEDSFTConfig(output_dir="out", objective="sed", mask_ratio=0.7)
trainer = SEDSFTTrainer(model, args=args, train_dataset=dataset, processing_class=tokenizer)
trainer.train()

It needs TRL (``pip install "sedsft[train]"``); ``sedsft.patch(model)`` runs the same objectives in any
other training loop with the core install alone.
"""

from sedsft.extras import require

require("trl")  # before the imports below: a one-line message naming the extra, not TRL's traceback

from .callbacks import METRICS_FILE, SUMMARY_FILE  # noqa: E402
from .config import LOSS_IMPLS, SEDSFTConfig  # noqa: E402
from .trainer import SEDSFTTrainer  # noqa: E402

__all__ = ["LOSS_IMPLS", "METRICS_FILE", "SUMMARY_FILE", "SEDSFTConfig", "SEDSFTTrainer"]
