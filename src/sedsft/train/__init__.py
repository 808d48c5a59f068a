"""SFT with any objective of :mod:`sedsft.losses` on top of TRL's ``SFTTrainer``.

from sedsft.train import SEDSFTConfig, SEDSFTTrainer
args = SEDSFTConfig(output_dir="out", objective="sed", mask_ratio=0.7)
trainer = SEDSFTTrainer(model, args=args, train_dataset=dataset, processing_class=tokenizer)
trainer.train()
"""

from .callbacks import METRICS_FILE, SUMMARY_FILE
from .config import LOSS_IMPLS, SEDSFTConfig
from .trainer import SEDSFTTrainer

__all__ = ["LOSS_IMPLS", "METRICS_FILE", "SUMMARY_FILE", "SEDSFTConfig", "SEDSFTTrainer"]
