"""`sedsft selfcheck`: every objective, logits and fused paths, against its naive twin, in a few seconds.

A quick health check of an installation (CPU or GPU): prints the largest value and gradient
differences per objective and exits non-zero if any exceeds the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .cli_parse import parse_command
from .losses import fused_linear, naive, objective_loss
from .models import check_device, default_device

CASES = [
    ("ce", {}),
    ("dft", {}),
    ("gem", {"beta": 0.7}),
    ("gem", {"beta": 0.7, "h": "logsigmoid"}),
    ("sed", {"tau": 0.4}),
    ("sed_nomask", {}),
]


def run(*, device: str = "cpu", tol: float = 1e-9) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    B, T, d, V = 3, 37, 24, 301  # odd sizes, several chunks
    hidden = torch.randn(B, T, d, generator=g, dtype=torch.float64).to(device)
    weight = (torch.randn(V, d, generator=g, dtype=torch.float64) / 3).to(device)
    labels = torch.randint(0, V, (B, T), generator=g).to(device)
    labels[:, :5] = -100
    rows = []
    for name, opts in CASES:
        results = {}
        for path in ("naive", "logits", "fused"):
            h = hidden.clone().requires_grad_()
            w = weight.clone().requires_grad_()
            if path == "fused":
                loss = fused_linear(h, w, labels, objective=name, chunk_size=16, **opts)
            elif path == "logits":
                loss = objective_loss(name, h @ w.T, labels, **opts)
            else:
                loss = naive.NAIVE[name](h @ w.T, labels, **opts)
            results[path] = (loss.detach(), *torch.autograd.grad(loss, [h, w]))
        diff = {
            path: max(float((a - b).abs().max()) for a, b in zip(results[path], results["naive"]))
            for path in ("logits", "fused")
        }
        label = name + ("/" + opts["h"] if "h" in opts else "")
        rows.append(
            {"objective": label, "loss": float(results["naive"][0]), **diff, "ok": max(diff.values()) <= tol}
        )
    return rows


@dataclass
class SelfcheckArgs:
    device: str | None = field(
        default=None, metadata={"help": "where to run: auto (cuda when available), cpu, cuda, cuda:N"}
    )

    def __post_init__(self):
        self.device = check_device(self.device)


def main(argv: list[str] | None = None) -> int:
    (args,) = parse_command("selfcheck", argv or [], SelfcheckArgs, description=__doc__.splitlines()[0])
    args.device = args.device or default_device()
    rows = run(device=args.device)
    print(f"{'objective':16s} {'loss':>10s} {'|logits-naive|':>15s} {'|fused-naive|':>15s}")
    for r in rows:
        mark = "ok" if r["ok"] else "FAIL"
        print(f"{r['objective']:16s} {r['loss']:10.5f} {r['logits']:15.2e} {r['fused']:15.2e}  {mark}")
    failed = [r["objective"] for r in rows if not r["ok"]]
    if failed:
        print(f"selfcheck failed for: {', '.join(failed)}")
        return 1
    print("all objectives match their naive references (fp64, values and gradients)")
    return 0
