"""Step (a) of the GPU check: every objective on every engine against the logits path, in bf16 and fp32.

For each objective case (the test suite's table, plus SED at k = 1 and 8), engine (torch, chunked,
recompute), input precision (bf16 on the tensor cores, fp32 exact, fp32 through TF32 tensor cores) and
head (trained with a bias; frozen, no bias), the loss and the gradients of ``fused_linear`` are compared
with the exact result (the logits path in fp64 on the same inputs). The rule, as in the tests: the fused
path's error may not exceed that of the naive logits path in the same precision (logits materialised, the
reference formulas) by more than 5% plus half a unit in the last place of the precision (the loss, one
scalar: by more than twice). The shapes span several token chunks, vocabulary
blocks and tiles, with an odd vocabulary and ignored (-100) labels.

    python benchmarks/gpu_check/parity.py --device cuda --out OUTDIR/parity.json
    TRITON_INTERPRET=1 python benchmarks/gpu_check/parity.py --device cpu --tiny --out /tmp/parity.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tests.losses.cases import OBJECTIVE_CASES

from sedsft import losses
from sedsft.losses import naive
from sedsft.losses.fused import IMPLS

ENGINES = ("torch", "chunked", "recompute")
CASES = OBJECTIVE_CASES + [("sed", {"tau": 0.5, "top_k": 1}), ("sed", {"tau": 0.9, "top_k": 8})]
# precision -> (input dtype, torch's fp32 matmul precision, slack relative to the exact value's norm: about
# half a unit in the last place, what two equally good roundings of one sum can differ by)
TINY_CASES = [
    ("ce", {}),
    ("gem", {"beta": 0.5, "h": "logsigmoid"}),
    ("sed", {"tau": 0.3, "top_k": 2, "lam": 1.0}),
]
PRECISIONS = {
    "bf16": (torch.bfloat16, "highest", 2**-8),
    "fp32": (torch.float32, "highest", 1e-5),
    "fp32_tf32": (torch.float32, "high", 2**-11),  # fp32 inputs on TF32 tensor cores (CUDA only)
}
SHAPES = {"gpu": (2, 301, 384, 10007), "tiny": (2, 9, 16, 67)}  # (B, T, d, V)
CHUNK = {"gpu": 128, "tiny": 5}  # rows per chunk (torch, chunked): several chunks


def make_inputs(B, T, d, V, *, device, seed=0):
    """fp64 inputs with peaked logits (top-1 p of a few tenths), a bias, and 30% of the labels ignored."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, d, generator=g, dtype=torch.float64)
    weight = torch.randn(V, d, generator=g, dtype=torch.float64) / d**0.5 * 4
    bias = torch.randn(V, generator=g, dtype=torch.float64) * 0.5
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[torch.rand(B, T, generator=g) < 0.3] = -100
    return [t.to(device) for t in (hidden, weight, bias, labels)]


def _grads(fn, hidden, weight, bias, *, frozen):
    h = hidden.detach().clone().requires_grad_()
    w = weight.detach().clone().requires_grad_(not frozen)
    b = bias.detach().clone().requires_grad_() if bias is not None else None
    loss = fn(h, w, b)
    leaves = {k: t for k, t in (("h", h), ("w", w), ("b", b)) if t is not None and t.requires_grad}
    return {"loss": loss.detach(), **dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))}


def run_case(name, opts, impl, precision, *, frozen, inputs, chunk):
    """Errors of the fused path and of the naive path against fp64, per output (loss, h, w, b)."""
    dtype, matmul, slack = PRECISIONS[precision]
    hidden, weight, bias, labels = inputs
    if frozen:
        bias = None
    torch.set_float32_matmul_precision(matmul)
    try:

        def exact_fn(h, w, b):
            return losses.objective_loss(name, h @ w.T + (b if b is not None else 0), labels, **opts)

        def naive_fn(h, w, b):
            return naive.NAIVE[name](h @ w.T + (b if b is not None else 0), labels, **opts)

        def fused_fn(h, w, b):
            kw = {"chunk_size": chunk} if impl in ("torch", "chunked") else {}
            return losses.fused_linear(h, w, labels, objective=name, bias=b, impl=impl, **kw, **opts)

        low = [t.to(dtype) if t is not None else None for t in (hidden, weight, bias)]
        exact = _grads(exact_fn, *[t.double() if t is not None else None for t in low], frozen=frozen)
        nai = _grads(naive_fn, *low, frozen=frozen)
        got = _grads(fused_fn, *low, frozen=frozen)
    finally:
        torch.set_float32_matmul_precision("highest")
    out = []
    for key, e in exact.items():
        err = (got[key].double() - e).norm().item()
        naive_err = (nai[key].double() - e).norm().item()
        # the loss is one scalar, its rounding error one draw: twice the naive one's; a gradient's norm sums many
        bound = naive_err * (2.0 if key == "loss" else 1.05) + slack * e.norm().item() + 1e-6
        out.append(
            dict(output=key, err=err, naive_err=naive_err, exact_norm=e.norm().item(), ok=err <= bound)
        )
        if key != "loss" and got[key].dtype != low[0].dtype:
            out[-1].update(ok=False, note=f"gradient in {got[key].dtype}, not the input dtype")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument(
        "--tiny", action="store_true", help="tiny shapes (the CPU rehearsal, under TRITON_INTERPRET=1)"
    )
    ap.add_argument("--out", required=True, help="JSON file for the results")
    args = ap.parse_args(argv)
    size = "tiny" if args.tiny else "gpu"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    inputs = make_inputs(*SHAPES[size], device=device)
    precisions = [p for p in PRECISIONS if device.type == "cuda" or p != "fp32_tf32"]
    # tiny (the rehearsal): a few cases, to check the script, not the kernels (the tests do that)
    cases = TINY_CASES if args.tiny else CASES
    results, failed = [], 0
    for impl in ENGINES:
        for precision in precisions:
            for name, opts in cases:
                for frozen in (
                    (False, True) if name in ("ce", "sed") and opts.get("top_k", 2) == 2 else (False,)
                ):
                    row = dict(
                        objective=name, options=opts, impl=impl, precision=precision, frozen_head=frozen
                    )
                    if impl not in IMPLS:
                        results.append({**row, "status": f"skipped: impl {impl!r} is not in this sedsft"})
                        continue
                    try:
                        outs = run_case(
                            name, opts, impl, precision, frozen=frozen, inputs=inputs, chunk=CHUNK[size]
                        )
                    except ValueError as e:  # the engine says it cannot run here: on this GPU, a failure
                        results.append({**row, "status": f"failed: {e}"})
                        failed += 1
                        continue
                    ok = all(o["ok"] for o in outs)
                    failed += not ok
                    results.append(
                        {
                            **row,
                            "status": "ok" if ok else "failed: error above the naive path's",
                            "outputs": outs,
                        }
                    )
                    worst = max(o["err"] / max(o["naive_err"], 1e-30) for o in outs)
                    print(f"{impl:9s} {precision:9s} {name:10s} {json.dumps(opts):40s} frozen={frozen!s:5s} "
                          f"{results[-1]['status'][:6]:6s} worst err / naive err = {worst:.2f}", flush=True)  # fmt: skip
    summary = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "shape": SHAPES[size],
    }
    summary |= {"cases": len(results), "failed": failed, "results": results}
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(f"parity: {len(results) - failed} of {len(results)} cases ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
