"""SFT steps of a random-initialised Qwen2.5-1.5B-shaped model: CE vs SED through the fused head, tokens per second.

One step = the trainer's loss path (``fused_forward_loss``: the model's forward for its hidden states, the
engine owns the LM head, statistics logged) + backward + AdamW step. Each method runs in a fresh
subprocess (or, with ``--in-process``, all in this one, the model rebuilt from the same seed for each and
the allocator's peak reset between): a few warm-up steps (Triton compilation, allocator), then ``--steps``
timed steps; memory is ``torch.cuda.max_memory_allocated`` over the timed steps. ``hf_ce`` is the model's
own logits and loss (``model(labels=...)``) for reference; ``fused_<objective>_<impl>`` is the trainer's
fused head with ``impl`` one of ``sedsft.losses.fused.IMPLS``. Rows go to
``benchmarks/results/sft_step.csv`` (long format).

    python benchmarks/benchmark_sft_step.py --device cuda                # bf16, 4 x 2048 tokens per step
    python benchmarks/benchmark_sft_step.py --device cpu --preset tiny   # a quick check that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmark_fused_linear import machine_meta, open_results

RESULTS = Path(__file__).resolve().parent / "results" / "sft_step.csv"
PRESETS = {
    "qwen2.5-1.5b": dict(  # Qwen2.5-1.5B's shape (config.json of the released model), random weights
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    ),
    "micro": dict(  # the GPU check's CPU rehearsal: every step in the Triton interpreter in seconds
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=160,
        tie_word_embeddings=True,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=4096,
        tie_word_embeddings=True,
    ),
}
METHODS = ["hf_ce"] + [
    f"fused_{obj}_{impl}" for impl in ("torch", "chunked", "recompute", "auto") for obj in ("ce", "sed")
]
PROMPT_FRACTION = 0.3  # the first 30% of each sequence is prompt (label -100), as in completion-only SFT
TAU = 0.6
FIELDS = [
    "timestamp", "commit", "machine", "torch", "trl", "triton", "liger_kernel", "cut_cross_entropy", "device",
    "dtype", "preset", "batch", "seq", "method", "round", "status", "tokens_per_s", "step_s", "peak_mib", "loss",
]  # fmt: skip


def child(
    method: str, preset: str, batch: int, seq: int, device: str, dtype_name: str, steps: int, warmup: int = 2
) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sedsft import losses

    dtype = getattr(torch, dtype_name)
    impl = method.rsplit("_", 1)[-1] if method != "hf_ce" else None
    if impl is not None:
        if impl not in losses.fused.IMPLS:
            return {"status": f"skipped: impl {impl!r} is not in this sedsft"}
        try:
            losses.fused.resolve_impl(impl, torch.device(device), dtype)
        except ValueError as e:
            return {"status": f"skipped: {e}"}
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs (a 1.5B model's CPU initialisation takes a minute)
        model = Qwen2ForCausalLM(Qwen2Config(**PRESETS[preset])).to(dtype=dtype)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=g).to(device)
    labels = ids.clone()
    labels[:, : int(seq * PROMPT_FRACTION)] = -100
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    def step():
        if method == "hf_ce":
            loss = model(**inputs, use_cache=False).loss
        else:
            objective = method.split("_")[1]
            opts = {"tau": TAU} if objective == "sed" else {}
            out = losses.fused_forward_loss(
                model, inputs, objective=objective, impl=impl, return_stats=True, **opts
            )
            loss = out.loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    try:
        for _ in range(warmup):
            step()  # warm-up: compilation, allocator, optimizer states
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            loss = step()
            sync()
            times.append(time.perf_counter() - t0)
    except torch.cuda.OutOfMemoryError:
        return {"status": "skipped: out of memory"}
    step_s = statistics.median(times)
    return {
        "status": "ok",
        "tokens_per_s": batch * seq / step_s,
        "step_s": step_s,
        "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan"),
        "loss": float(loss),
    }


def _run_child(method: str, args, preset: str, seq: int, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--device", args.device, "--preset", preset, "--batch", str(args.batch)]
    cmd += ["--seq", str(seq), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--dtype", dtype, "--child", method]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if proc.returncode != 0:
        print(f"{method}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
        return {"status": f"failed: exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument(
        "--preset", default=None, choices=list(PRESETS), help="default: qwen2.5-1.5b on cuda, tiny on cpu"
    )
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument(
        "--seq", type=int, default=None, help="tokens per sequence (default: 2048 on cuda, 128 on cpu)"
    )
    ap.add_argument("--steps", type=int, default=5, help="timed steps per method (after --warmup steps)")
    ap.add_argument(
        "--warmup", type=int, default=2, help="untimed steps first (compilation, optimizer states)"
    )
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of every method")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--in-process", action="store_true", help="every method in this process")
    ap.add_argument("--output", default=str(RESULTS))
    ap.add_argument("--child", metavar="METHOD", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    gpu = args.device == "cuda"
    preset = args.preset or ("qwen2.5-1.5b" if gpu else "tiny")
    seq = args.seq or (2048 if gpu else 128)
    dtype = args.dtype or ("bfloat16" if gpu else "float32")
    if args.child:
        print(
            json.dumps(
                child(args.child, preset, args.batch, seq, args.device, dtype, args.steps, args.warmup)
            )
        )
        return 0
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown method(s) {sorted(unknown)}; choose from {METHODS}")
    if args.in_process and gpu:
        import torch
    meta = {**machine_meta(args.device, dtype), "preset": preset, "batch": args.batch, "seq": seq}
    by: dict[str, list[float]] = {}
    with open_results(Path(args.output), FIELDS) as (f, writer):
        for r in range(args.rounds):
            for m in methods:
                if args.in_process:
                    res = child(m, preset, args.batch, seq, args.device, dtype, args.steps, args.warmup)
                    if gpu:
                        torch.cuda.empty_cache()  # the next method starts from the same memory
                else:
                    res = _run_child(m, args, preset, seq, dtype)
                writer.writerow({**meta, "method": m, "round": r, **res})
                f.flush()
                if res["status"] != "ok":
                    print(f"round {r} {m:18s} {res['status']}")
                    continue
                by.setdefault(m, []).append(res["tokens_per_s"])
                print(f"round {r} {m:18s} {res['tokens_per_s']:10.0f} tokens/s  {res['peak_mib']:9.0f} MiB")
    best = {m: max(v) for m, v in by.items()}
    for impl in ("torch", "chunked", "recompute", "auto"):
        ce, sed = best.get(f"fused_ce_{impl}"), best.get(f"fused_sed_{impl}")
        if ce and sed:
            verdict = "met" if sed / ce >= 0.97 else "MISSED"
            print(
                f"throughput fused_sed_{impl} / fused_ce_{impl} = {sed / ce:.3f} (target >= 0.97): {verdict}"
            )
    if "hf_ce" in best:
        for m, v in best.items():
            if m != "hf_ce":
                print(f"throughput {m} / hf_ce = {v / best['hf_ce']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
