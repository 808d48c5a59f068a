"""The paper's objectives behind one API: on logits, or fused with the LM head.

from sedsft import losses
loss = losses.sed(logits, labels, tau=0.83)                        # logits [B, T, V]
loss = losses.fused_linear(hidden, lm_head.weight, labels, objective="sed", tau=0.83)
out = losses.sed(logits, labels, tau=0.83, return_stats=True)      # out.loss, out.stats.means()
"""

from .fused import auto_chunk_size, fused_linear
from .head import HeadInputs, check_fusable, fused_forward_loss, hidden_and_head
from .logits import cross_entropy, dft, gem, objective_loss, sed, sed_nomask
from .objectives import OBJECTIVES, Objective, TokenTerms, get_objective
from .stats import BatchStats, LossOutput
from .token_stats import TokenStats, token_stats

__all__ = [
    "OBJECTIVES",
    "HeadInputs",
    "check_fusable",
    "fused_forward_loss",
    "hidden_and_head",
    "BatchStats",
    "LossOutput",
    "Objective",
    "TokenTerms",
    "auto_chunk_size",
    "cross_entropy",
    "dft",
    "fused_linear",
    "gem",
    "get_objective",
    "objective_loss",
    "sed",
    "sed_nomask",
    "TokenStats",
    "token_stats",
]
