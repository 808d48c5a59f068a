"""The fused loss on a sharded tiny Llama, run under ``torchrun`` (gloo, CPU).

``python -m tests.train.sharded_worker OUT fsdp2|zero3`` trains each variant of the mode for two SGD steps on
this rank's half of two fixed batches and writes, on rank 0, ``OUT/<mode>.pt``: per variant the full
parameters after the steps and what the head looked like after the model's forward (a DTensor shard, an
empty ZeRO-3 partition or a plain tensor), so the test knows which path ran. :func:`reference` is the
same run on one process.

The ``patched_*`` variants take the loss from the model's own forward after ``sedsft.patch`` (applied before
``fully_shard`` / ``deepspeed.initialize``), which must reach the same parameters.

``python -m tests.train.sharded_worker OUT zero3_trainer MODEL DATA`` (one process: accelerate runs DeepSpeed
on CPU only as a single process) trains SEDSFTTrainer under ZeRO-3 and writes ``OUT/zero3_trainer.pt``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

import sedsft
from sedsft.losses import fused_forward_loss
from sedsft.losses.head import unwrap

from ..tiny import char_tokenizer, tiny_llama

STEPS, LR, ROWS = 2, 0.5, 4
OPTIONS = {"objective": "sed", "tau": 0.6, "lam": 1.0, "top_k": 2}
FSDP2_VARIANTS = {  # name: (tied embeddings, how fully_shard is applied)
    "root_unsharded": (False, "default"),  # FSDP keeps the root unsharded after forward: a plain head
    "resharded": (False, "reshard"),  # accelerate's fsdp_reshard_after_forward: true -> a DTensor head
    "head_unit": (False, "head_unit"),  # lm_head in an FSDP unit of its own
    "tied": (True, "reshard"),  # the head is the (sharded) embedding
}
ZERO3_VARIANTS = {"untied": False, "tied": True}
# the same runs with the loss from a sedsft.patch'ed model's own forward (patched before sharding)
FSDP2_PATCHED = {"patched_resharded": (False, "reshard"), "patched_tied": (True, "reshard")}
ZERO3_PATCHED = {"patched_untied": False, "patched_tied": True}
# and "fsdp1" (untied), run in the fsdp2 launch: see _fsdp1


def model(tied: bool):
    return tiny_llama(char_tokenizer(), tie_word_embeddings=tied, attention_dropout=0.0)


def batches() -> list[dict]:
    """Two batches of ROWS rows: prompt positions and right padding carry label -100."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(STEPS):
        ids = torch.randint(5, 90, (ROWS, 12), generator=g)  # [B, T]
        mask = torch.ones_like(ids)
        mask[1, 9:] = 0
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, :3] = -100
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def _patch(net, patched: bool):
    if patched:
        options = dict(OPTIONS)
        sedsft.patch(net, options.pop("objective"), **options)
    return net


def _steps(net, opt_step, backward, *, rank: int, world: int, patched: bool = False) -> str:
    """STEPS updates on rows [rank::world] of each batch; returns the head's type after the first forward."""
    seen = ""
    for batch in batches():
        total = int((batch["labels"][:, 1:] != -100).sum())  # label tokens of the whole step, all ranks
        mine = {k: v[rank::world] for k, v in batch.items()}
        if patched:  # the model's own forward returns the loss
            loss = net(**mine, num_items_in_batch=total).loss * world
        else:
            loss = fused_forward_loss(net, mine, num_items_in_batch=total, **OPTIONS) * world  # ranks average
        head = unwrap(net).get_output_embeddings().weight
        seen = seen or (type(head).__name__ if head.numel() else "empty partition")
        backward(loss)
        opt_step()
    return seen


def reference(tied: bool) -> dict[str, torch.Tensor]:
    """One process, the whole batches: the parameters the sharded runs must reach."""
    net = model(tied)
    opt = torch.optim.SGD(net.parameters(), lr=LR)

    def step():
        opt.step()
        opt.zero_grad()

    _steps(net, step, lambda loss: loss.backward(), rank=0, world=1)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def run_fsdp2(rank: int, world: int) -> dict:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    out = {}
    for name, (tied, how) in {**FSDP2_VARIANTS, **FSDP2_PATCHED}.items():
        net = _patch(model(tied), name in FSDP2_PATCHED)
        reshard = {"reshard_after_forward": True} if how == "reshard" else {}
        for layer in net.model.layers:
            fully_shard(layer, **reshard)
        if how == "head_unit":
            fully_shard(net.lm_head, reshard_after_forward=True)
        fully_shard(net, **reshard)
        opt = torch.optim.SGD(net.parameters(), lr=LR)

        def step(opt=opt):
            opt.step()
            opt.zero_grad()

        seen = _steps(
            net, step, lambda loss: loss.backward(), rank=rank, world=world, patched=name in FSDP2_PATCHED
        )
        state = {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in net.state_dict().items()}
        out[name] = {"head_after_forward": seen, "params": {k: v.detach().clone() for k, v in state.items()}}
    out["fsdp1"] = _fsdp1(rank, world)
    return out


def _fsdp1(rank: int, world: int) -> dict:
    """FSDP1, decoder layers wrapped, the head in the root unit, use_orig_params=False: the supported case."""
    import functools

    from torch.distributed.fsdp import FullyShardedDataParallel, StateDictType
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={LlamaDecoderLayer})
    net = FullyShardedDataParallel(model(False), auto_wrap_policy=policy, device_id=torch.device("cpu"))
    opt = torch.optim.SGD(net.parameters(), lr=LR)

    def step():
        opt.step()
        opt.zero_grad()

    seen = _steps(net, step, lambda loss: loss.backward(), rank=rank, world=world)
    with FullyShardedDataParallel.state_dict_type(net, StateDictType.FULL_STATE_DICT):
        state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return {"head_after_forward": seen, "params": state}


def run_zero3(rank: int, world: int) -> dict:
    import deepspeed

    config = {
        "train_micro_batch_size_per_gpu": ROWS // world,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 0.0,  # DeepSpeed clips at 1.0 unless told otherwise
        "zero_optimization": {
            "stage": 3,
            "stage3_param_persistence_threshold": 0,
        },  # partition even tiny ones
        "zero_allow_untested_optimizer": True,
    }
    out = {}
    for name, tied in {**ZERO3_VARIANTS, **ZERO3_PATCHED}.items():
        net = _patch(model(tied), name in ZERO3_PATCHED)
        engine, *_ = deepspeed.initialize(
            model=net, optimizer=torch.optim.SGD(net.parameters(), lr=LR), config=config
        )
        seen = _steps(
            engine, engine.step, engine.backward, rank=rank, world=world, patched=name in ZERO3_PATCHED
        )
        params = list(engine.module.parameters())
        with deepspeed.zero.GatheredParameters(params):
            state = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
        status = (
            unwrap(engine).get_output_embeddings().weight.ds_status.name
        )  # released again after the steps?
        out[name] = {"head_after_forward": seen, "head_after_steps": status, "params": state}
        engine.destroy()
    return out


ZERO3_TRAINER = {
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
    "zero_allow_untested_optimizer": True,
}


def run_zero3_trainer(out: Path, model_dir: Path, data: Path) -> dict:
    import deepspeed

    from .worker import train

    trainer = train(
        out, model_dir, data, per_device=2, accum=2, steps=2, objective="sed", loss_impl="fused",
        deepspeed=ZERO3_TRAINER, use_cpu=False,  # use_cpu would switch DeepSpeed off; this machine has no GPU anyway
    )  # fmt: skip
    params = list(trainer.model_wrapped.module.parameters())
    with deepspeed.zero.GatheredParameters(params):
        state = {k: v.detach().clone() for k, v in trainer.model_wrapped.module.state_dict().items()}
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"loss_impl": trainer.loss_impl, "zero_stage": trainer.accelerator.state.deepspeed_plugin.zero_stage,
            "tau": trainer.tau, "losses": losses, "params": state}  # fmt: skip


def main(argv: list[str]) -> None:
    out, mode = Path(argv[0]), argv[1]
    if mode == "zero3_trainer":
        torch.save(run_zero3_trainer(out, Path(argv[2]), Path(argv[3])), out / f"{mode}.pt")
        return
    if mode == "zero3":
        import deepspeed

        deepspeed.init_distributed("gloo")
    else:
        torch.distributed.init_process_group("gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    result = run_zero3(rank, world) if mode == "zero3" else run_fsdp2(rank, world)
    if rank == 0:
        torch.save(result, out / f"{mode}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    main(sys.argv[1:])
