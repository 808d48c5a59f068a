"""sedsft: Selectively Encouraging Diversity in Supervised Fine-Tuning.

Objectives (``sedsft.losses``), the fused LM-head engine, tau calibration (``sedsft.calibrate``),
SFT and GRPO training on Transformers/TRL, the paper's math evaluation and analysis, and a CPU demo.
"""

__version__ = "0.1.0"
