"""The paper's objectives behind one API: on logits, or fused with the LM head.

from sedsft import losses
loss = losses.sed(logits, labels, tau=0.83)                        # logits [B, T, V]
loss = losses.fused_linear(hidden, lm_head.weight, labels, objective="sed", tau=0.83)  # impl="auto"
stats = losses.token_stats(rows, lm_head.weight, targets, top_k=2)  # rows [N, d]: P_topk, p, entropy
out = losses.sed(logits, labels, tau=0.83, return_stats=True)      # out.loss, out.stats.means()
"""

from .fused import IMPLS, auto_chunk_size, fused_linear
from .head import HeadInputs, check_fusable, fused_forward_loss, hidden_and_head
from .logits import cross_entropy, dft, gem, objective_loss, sed, sed_nomask
from .objectives import OBJECTIVES, Objective, TokenTerms, get_objective
from .stats import BatchStats, LossOutput
from .token_stats import TokenStats, token_stats

__all__ = [
    "IMPLS",
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
