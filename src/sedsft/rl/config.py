"""Configuration of ``sedsft grpo``: TRL's GRPOConfig with the paper's RL recipe as defaults.

The paper trains every SFT checkpoint with GRPO in verl using verl's defaults plus: 256 prompts x 8
samples per step, clip range [1 - 0.2, 1 + 0.28], no KL term, token-level loss, learning rate 1e-6.
Where TRL has the same knob, :class:`SEDGRPOConfig` defaults to the paper's value (and verl's default
where the paper relies on it):

| paper / verl                                  | TRL GRPOConfig                          |
| --------------------------------------------- | --------------------------------------- |
| rollout.n = 8                                 | ``num_generations = 8``                 |
| clip_ratio_low 0.2 / clip_ratio_high 0.28     | ``epsilon = 0.2``, ``epsilon_high = 0.28`` |
| dual-clip clip_ratio_c = 3.0 (verl default)   | ``delta = 3.0`` (caps the ratio where A < 0) |
| use_kl_loss = False, no KL in reward          | ``beta = 0.0`` (no reference model)     |
| loss_agg_mode = "token-mean"                  | ``loss_type = "dapo"`` (see below)      |
| actor.optim.lr = 1e-6                         | ``learning_rate = 1e-6``                |
| GRPO advantage: (r - group mean) / group std  | ``scale_rewards = "group"``             |
| rollout temperature 1.0, top_p 1.0            | ``temperature = 1.0``, ``top_p = 1.0``  |
| ppo_epochs 1                                  | ``num_iterations = 1``                  |
| ppo_mini_batch_size (verl default: the batch) | ``generation_batch_size`` / optimizer batch (below) |
| actor optim: constant lr, weight decay 0.01   | ``lr_scheduler_type = "constant"``, ``weight_decay = 0.01`` |

Token-level loss: verl's "token-mean" sums the clipped per-token losses of the whole mini-batch and
divides once by its number of response tokens, so every token weighs the same whatever the length of
its response. Of TRL's ``loss_type`` options, "dapo" does exactly that over the global accumulated
batch (all processes, all accumulation steps); "bnpo" does it per local micro-batch only (so the
result depends on the micro-batch split); "grpo" averages per sequence first (long responses' tokens
weigh less); "dr_grpo" divides by a constant (max_completion_length). So "dapo".

Dual clip: verl's PPO loss bounds the ratio by ``clip_ratio_c`` (3.0) on tokens with a negative
advantage; TRL's ``delta`` clamps the unclipped ratio at the same value, which changes the loss only
there (for A > 0 the clipped term is already the smaller one), so ``delta = 3.0`` is verl's dual clip.

The batch: one optimizer step sees ``per_device_train_batch_size x processes x
gradient_accumulation_steps`` completions; one rollout generates ``generation_batch_size`` completions
(TRL's default: the optimizer batch, one update per rollout, as verl's default ppo_mini_batch_size). The
paper's 256 prompts x 8 samples = 2,048 completions per rollout. The authors' verl script updates on
mini-batches of 32 prompts (256 completions): 8 optimizer steps per rollout, which
``configs/paper/grpo_*.yaml`` spell out (``generation_batch_size: 2048`` over 8 GPUs x 8 x 4
accumulation). A checkpoint taken between those 8 steps holds the rollout, so resume stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from sedsft.cli_parse import SYSTEM_PROMPT_HELP, overflow_field, system_prompt_value
from sedsft.cores import cap_workers
from sedsft.errors import UserError, check_choice, check_count, check_finite_fields, check_number
from sedsft.limits import check_overflow
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT
from sedsft.rl.rewards import REWARDS
from sedsft.train.config import default_bf16_to_hardware

# The paper's RL prompts (2,069 filtered MATH problems), relative to the project root.
PAPER_RL_DATA = "../shared/data/rl/math_level1_filtered.parquet"


@dataclass
class SEDGRPOConfig(GRPOConfig):
    """GRPOConfig with the paper's RL recipe as defaults (module table); every TRL option still works."""

    learning_rate: float = field(default=1e-6, metadata={"help": "AdamW learning rate (paper: 1e-6)."})
    num_generations: int | None = field(
        default=8, metadata={"help": "Samples per prompt, the GRPO group size G (paper: 8)."}
    )
    epsilon: float = field(
        default=0.2, metadata={"help": "Lower clip range of the ratio: 1 - epsilon (paper: 0.2)."}
    )
    epsilon_high: float | None = field(
        default=0.28,
        metadata={
            "help": "Upper clip range of the ratio: 1 + epsilon_high (paper: 0.28, DAPO's clip-higher)."
        },
    )
    delta: float | None = field(
        default=3.0,
        metadata={
            "help": "Upper bound on the unclipped ratio (two-sided clipping): verl's dual-clip clip_ratio_c, "
            "3.0 by default there (the paper runs verl's defaults); None = TRL's plain clipping."
        },
    )
    beta: float = field(
        default=0.0, metadata={"help": "KL coefficient; 0 = no KL and no reference model (paper)."}
    )
    loss_type: str = field(
        default="dapo",
        metadata={
            "help": "Loss aggregation. 'dapo' = token-level mean over the whole accumulated batch, verl's "
            "'token-mean' (paper). See TRL's GRPOConfig for 'grpo', 'bnpo', 'dr_grpo' and others."
        },
    )
    scale_rewards: str = field(
        default="group",
        metadata={
            "help": "Advantage = (r - group mean) / group std: 'group' (GRPO, verl's default), 'batch' or 'none'."
        },
    )
    temperature: float = field(
        default=1.0, metadata={"help": "Rollout sampling temperature (verl's default 1.0)."}
    )
    max_completion_length: int | None = field(
        default=3072,
        metadata={
            "help": "Response token budget per sample. The paper does not state it; the authors' verl script uses "
            "3,072 (max_response_length), which keeps prompt + response within Qwen2.5-Math-7B-Instruct's 4,096 tokens."
        },
    )
    lr_scheduler_type: str = field(
        default="constant",
        metadata={"help": "Learning-rate schedule; verl's actor default is constant (no warm-up)."},
    )
    weight_decay: float = field(
        default=0.01, metadata={"help": "AdamW weight decay (verl's actor default 0.01)."}
    )
    logging_steps: float = field(
        default=1, metadata={"help": "Log every N optimizer steps (RL steps are few and long)."}
    )
    use_vllm: bool | None = field(
        default=None,
        metadata={
            "help": "Generate with vLLM (colocated on the training GPUs). Unset: vLLM when it is installed and a GPU "
            "is present, else Transformers generate."
        },
    )
    save_steps: float = field(
        default=10, metadata={"help": "Save a checkpoint every N optimizer steps (resume point)."}
    )

    def __post_init__(self):
        # checked before TRL's own __post_init__, which divides by some of them
        check_count("num_generations", self.num_generations, minimum=2, allow_none=True)
        check_count("max_completion_length", self.max_completion_length, allow_none=True)
        check_number("temperature", self.temperature, low=0, open_low=True)
        check_number("top_p", self.top_p, low=0, high=1, open_low=True)
        check_number("epsilon", self.epsilon, low=0)
        check_number("learning_rate", self.learning_rate, low=0)
        check_finite_fields(self)  # NaN or infinity means nothing in any other float option either
        if self.use_vllm is None:
            self.use_vllm = _vllm_usable()
        default_bf16_to_hardware(self)
        super().__post_init__()
        if self.epsilon_high is not None and self.epsilon_high < self.epsilon:
            raise UserError(f"epsilon_high must be >= epsilon ({self.epsilon}), got {self.epsilon_high}")
        if self.beta < 0:
            raise UserError(f"beta must be >= 0, got {self.beta}")
        if self.delta is not None and self.delta <= 1 + (self.epsilon_high or self.epsilon):
            raise UserError(
                f"delta must be > 1 + epsilon_high ({1 + (self.epsilon_high or self.epsilon)}) or None, got {self.delta}"
            )


def _vllm_usable() -> bool:
    import importlib.util

    import torch

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


REWARD_HELP = (
    "'math': 1 / 0 by the evaluation's grader (Math-Verify equivalence); 'authors_boxed': the authors' verl "
    "recipe, +1 / -1 for an exact match of the last \\boxed{} against the gold (docs/rl.md)"
)


@dataclass
class GRPOScriptArguments:
    """What ``sedsft grpo`` trains on and how it is rewarded (the model comes from TRL's ModelConfig)."""

    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Local prompt file or folder (JSONL, JSON, Parquet): verl layout (prompt messages + "
            f"reward_model.ground_truth, e.g. {PAPER_RL_DATA}) or question/answer, problem/solution, "
            "prompt/completion, messages.",
            "aliases": ["--data"],
            "manifest": False,  # a run input (path and fingerprint)
        },
    )
    eval_dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Optional local prompt file for TRL's periodic evaluation (same layouts).",
            "manifest": False,
        },
    )
    system_prompt: str | None = field(default=DEFAULT_SYSTEM_PROMPT, metadata={"help": SYSTEM_PROMPT_HELP})
    missing_gold: str = field(
        default="drop",
        metadata={
            "help": "Prompts without a gold answer (the paper's RL file has one): 'drop' them with a warning, "
            "'keep' them (reward None: no learning signal), or 'error'.",
            "choices": ["drop", "keep", "error"],
        },
    )
    max_prompts: int | None = field(
        default=None, metadata={"help": "Use only the first N prompts of the file (smoke tests)."}
    )
    reward: str = field(
        default="math",
        metadata={"help": REWARD_HELP, "choices": list(REWARDS)},
    )
    # prompts longer than the model's context: dropped, as verl filters overlong prompts (a question cut
    # short has lost what it asks); "truncate" cuts the end of the last user turn
    overflow: str = overflow_field("drop")
    reward_workers: int = field(
        default=0,
        metadata={
            "help": "Grade in this many worker processes with a hard per-response timeout (the evaluation's "
            "GraderPool); 0 grades in the trainer process with Math-Verify's own timeouts."
        },
    )
    reward_timeout_s: float = field(
        default=2.0, metadata={"help": "Per-response grading time limit in seconds when reward_workers > 0."}
    )

    def __post_init__(self):
        self.system_prompt = system_prompt_value(self.system_prompt)
        check_overflow(self.overflow)
        check_count("max_prompts", self.max_prompts, allow_none=True)
        check_choice("reward", self.reward, tuple(REWARDS))
        check_count("reward_workers", self.reward_workers, minimum=0)
        if self.reward != "math" and self.reward_workers > 0:
            raise UserError(
                f"--reward_workers grades with --reward math; --reward {self.reward} needs no workers"
            )
        self.reward_workers = cap_workers("--reward_workers", self.reward_workers)  # at most the cores
        check_number("reward_timeout_s", self.reward_timeout_s, low=0, open_low=True)
