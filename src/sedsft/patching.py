"""``sedsft.patch(model)``: any objective through the fused LM head inside the model's own forward, for any loop.

    import sedsft
    sedsft.patch(model, objective="sed", tau=0.83)        # or calibration="sedsft_calibration.json"
    out = model(input_ids, attention_mask=mask, labels=labels, num_items_in_batch=n)
    out.loss.backward()                                    # out.logits is None: no [N, V] logits were made
    sedsft.unpatch(model)                                  # the model's own forward again

The patch binds a wrapper of the model's ``forward`` to this one model instance (as Liger's per-model
patch does; the class, and every other model, is left alone). Called with ``labels``, the wrapper runs
the original forward for the final hidden states (projecting one position only, ``logits_to_keep=1``),
then hands them and the head weight to the fused engine (:func:`sedsft.losses.head.head_loss`, the call
``SEDSFTTrainer`` makes): Hugging Face's label shift and -100, the sum divided by ``num_items_in_batch``
when given (Transformers' own convention, so ``transformers.Trainer``'s gradient accumulation is exact),
else by the kept-token count. Without ``labels`` it is the original forward (generation, evaluation).

The head is gathered exactly as the trainer gathers it (:func:`sedsft.losses.head.head_inputs`): a ZeRO-3
or FSDP2 shard is gathered for the loss only and its gradient sent back. Since the loss is computed
inside the model's forward, DeepSpeed's and FSDP's forward hooks see it as part of that forward. The
innermost Transformers model is patched, so patching before or after PEFT's ``get_peft_model``, DDP or
DeepSpeed gives the same model; patch before accelerate's ``prepare`` (its mixed-precision wrapper of
``forward`` then wraps the patched one, and ``unpatch`` refuses until it is unwrapped). A PEFT adapter on
the head is refused (:func:`sedsft.losses.check_fusable`), a trainable copy (``modules_to_save``) is fused.

Statistics: every forward with labels adds its sums (mask rate, penalty, gold p, entropy, top-k mass,
top-1 accuracy: :class:`sedsft.losses.BatchStats`) to the patch, read with ``patched(model).stats()``
(means since the last read, summed over processes) or ``.last`` (the last forward's sums).
:class:`PatchStatsCallback` logs them with the Trainer's logs, to whatever ``report_to`` is set.
"""

from __future__ import annotations

import functools
import inspect
import types
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor, nn
from transformers import TrainerCallback

from .losses import BatchStats, get_objective
from .losses.fused import IMPLS
from .losses.head import check_fusable, head_inputs, head_loss, unwrap

ATTR = "sedsft_patch"  # where a patched model keeps its Patch
MODES = ("train", "eval")


@dataclass
class Patch:
    """A patched model's settings and the statistic sums of its forwards since they were last read."""

    objective: str
    options: dict  # the objective's options, validated (tau, top_k, lam, beta, h)
    impl: str = "auto"  # fused_linear's impl
    return_logits: bool = False
    sums: dict[str, Tensor | None] = field(default_factory=lambda: dict.fromkeys(MODES))  # [9] float64 each
    last: BatchStats | None = None  # the last forward's sums
    _had_forward: object = None  # an instance attribute ``forward`` the model had before (else None)
    _wrapper: object = None  # the function bound as the model's forward

    def record(self, stats: BatchStats, *, training: bool) -> None:
        mode = "train" if training else "eval"
        sums = stats.as_tensor().detach()  # [9] float64
        self.sums[mode] = sums if self.sums[mode] is None else self.sums[mode] + sums
        self.last = stats

    def stats(self, mode: str = "train", *, reset: bool = True, reduce: bool = True) -> dict[str, float]:
        """Per-token means (mask_rate, de_penalty, gold_prob, entropy, topk_mass, top1_acc, ...) of the
        ``mode`` forwards since the last read; ``{}`` if there was none.

        ``reduce``: summed over the processes of ``torch.distributed`` first, so every process must call it
        (as the Trainer's logging does); ``reset`` starts a new window.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        sums = self.sums[mode]
        if reduce and _distributed():
            if sums is None:  # a process that saw no batch still joins the reduction
                sums = BatchStats.zeros(device=_reduce_device()).as_tensor()
            sums = sums.clone()
            torch.distributed.all_reduce(sums)
        if reset:
            self.sums[mode] = None
        if sums is None or float(sums[0]) == 0:
            return {}
        return BatchStats.from_tensor(sums).means()


def patch(
    model: nn.Module,
    objective: str = "sed",
    *,
    tau: float | None = None,
    calibration: str | None = None,
    impl: str = "auto",
    return_logits: bool = False,
    **options,
) -> Patch:
    """Make ``model(..., labels=...)`` return ``objective``'s loss through the fused head; returns the Patch.

    ``objective``: a name of :data:`sedsft.losses.OBJECTIVES` (ce, dft, gem, sed, sed_nomask);
    ``options``: its options (``top_k``, ``lam``; GEM's ``beta``, ``h``). SED-SFT's ``tau`` is given, or
    read from ``calibration`` (the JSON ``sedsft calibrate`` writes; its ``top_k`` is used unless one is
    given). ``return_logits``: also compute the full logits (they cost the ``[B, T, V]`` memory the fused
    head saves). Patching a patched model replaces its settings.
    """
    obj = get_objective(objective)
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if calibration is not None:
        if tau is not None:
            raise ValueError("give tau or calibration, not both")
        tau, options = _from_calibration(calibration, options)
    # the options the objective takes, as SEDSFTConfig reads them (a variant's fixed ones excluded)
    accepted = {f.name for f in fields(obj.options_cls)} - dict(obj.fixed).keys()
    if "tau" in accepted:
        if tau is None:
            raise ValueError(
                f"objective {objective!r} needs tau: pass tau=<value> or calibration=<file from sedsft calibrate>"
            )
        options["tau"] = tau
    elif tau is not None:
        raise ValueError(f"objective {objective!r} has no tau")
    obj.options(**options)  # validated now, not at the first step
    inner = unwrap(model)
    check_fusable(inner)
    if patched(inner) is not None:
        unpatch(inner)
    state = Patch(objective, dict(options), impl=impl, return_logits=return_logits)
    state._had_forward = inner.__dict__.get("forward")
    original = inner.forward  # a bound method (of the class, or an instance wrapper set before)
    inner.forward = types.MethodType(_patched_forward(original, state), inner)
    setattr(inner, ATTR, state)
    return state


def unpatch(model: nn.Module) -> None:
    """Restore the model's own forward (exactly: the instance attribute it had, or the class's)."""
    inner = unwrap(model)
    state = patched(inner)
    if state is None:
        raise ValueError(f"{type(inner).__name__} is not patched by sedsft.patch")
    if getattr(inner.forward, "__func__", None) is not getattr(state, "_wrapper", None):
        raise ValueError(
            "the model's forward was wrapped again after sedsft.patch (e.g. by accelerate's prepare): unpatch "
            "before wrapping, or use the unwrapped model"
        )
    if state._had_forward is None:
        del inner.forward
    else:
        inner.forward = state._had_forward
    delattr(inner, ATTR)


def patched(model: nn.Module) -> Patch | None:
    """The Patch of a patched model (through DDP / DeepSpeed / PEFT wrappers), else None."""
    return getattr(unwrap(model), ATTR, None)


def _patched_forward(original, state: Patch):
    signature = inspect.signature(original)

    @functools.wraps(original)
    def forward(self, *args, **kwargs):
        if args:  # positional arguments as keywords, so that labels are found wherever they are
            kwargs = _as_keywords(signature, args, kwargs)
        labels = kwargs.pop("labels", None)
        if labels is None:
            return original(**kwargs)
        num_items = kwargs.pop("num_items_in_batch", None)
        want_hidden = bool(kwargs.get("output_hidden_states"))
        as_tuple = kwargs.get("return_dict") is False
        if as_tuple:
            kwargs["return_dict"] = True
        kwargs.setdefault("use_cache", False)
        kwargs.update(output_hidden_states=True, logits_to_keep=0 if state.return_logits else 1)
        out = original(**kwargs)
        parts = head_inputs(self, out.hidden_states[-1])  # [B, T, d], after the final norm
        res = head_loss(
            parts,
            labels,
            objective=state.objective,
            num_items_in_batch=num_items,
            return_stats=True,
            impl=state.impl,
            **state.options,
        )
        state.record(res.stats, training=self.training)
        fields = dict(out)
        fields["loss"] = res.loss
        if not state.return_logits:
            fields.pop("logits", None)  # the one-position logits of logits_to_keep=1
        if not want_hidden:
            fields.pop("hidden_states", None)
        result = type(out)(**fields)
        return result.to_tuple() if as_tuple else result

    # the original's signature (Trainer reads it for the dataset columns and loss kwargs), with self to bind
    own = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    forward.__signature__ = signature.replace(parameters=[own, *signature.parameters.values()])
    state._wrapper = forward
    return forward


def _as_keywords(signature: inspect.Signature, args: tuple, kwargs: dict) -> dict:
    bound = signature.bind_partial(*args, **kwargs).arguments
    out = {}
    for name, value in bound.items():
        if signature.parameters[name].kind == inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        else:
            out[name] = value
    return out


def _from_calibration(path: str, options: dict) -> tuple[float, dict]:
    from .calibrate import Calibration

    cal = Calibration.load(path)
    options = dict(options)
    # the paper preset scores the mask's own k; the authors' preset scores k = 10 whatever the mask's k
    if "top_k" not in options and cal.spec is not None and cal.spec.preset == "paper":
        options["top_k"] = cal.spec.top_k
    return cal.tau, options


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _reduce_device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class PatchStatsCallback(TrainerCallback):
    """Adds a patched model's statistic means to every Trainer log (train, and ``eval_``-prefixed in evaluation).

    The Trainer hands each log to its callbacks in order, and its ``report_to`` integrations come first:
    install it with :meth:`attach`, which puts it before them, so W&B, TensorBoard, ... and
    ``trainer.state.log_history`` all get the statistics. Every process takes part in the reduction.
    """

    @classmethod
    def attach(cls, trainer) -> PatchStatsCallback:
        callback = cls()
        trainer.callback_handler.callbacks.insert(0, callback)
        return callback

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        state_ = patched(model) if model is not None else None
        if state_ is None or logs is None:
            return
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        means = {prefix + k: v for k, v in state_.stats(mode).items()}
        logs.update(means)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(means)  # the row Trainer.log appended for these logs
