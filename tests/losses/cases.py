"""Shared tables for the loss tests: every objective with options, and per-dtype tolerances."""

import torch

# (objective name, options): every registered objective, GEM with both weightings
OBJECTIVE_CASES = [
    ("ce", {}),
    ("dft", {}),
    ("gem", {"beta": 0.7}),
    ("gem", {"beta": 0.5, "h": "logsigmoid"}),
    ("sed", {"tau": 0.3, "top_k": 2, "lam": 1.0}),
    ("sed", {"tau": 0.5, "top_k": 3, "lam": 2.5}),
    ("sed_nomask", {"top_k": 2, "lam": 1.0}),
]

# (dtype, atol, rtol) for the exact dtypes
EXACT_TOLERANCES = [(torch.float64, 1e-10, 1e-9), (torch.float32, 2e-5, 2e-4)]


def case_id(case):
    name, opts = case
    return name + "".join(f"-{k}{v}" for k, v in opts.items())


def random_batch(B, T, V, *, seed=0, ignore_frac=0.25, dtype=torch.float64, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=g, dtype=torch.float64) * scale).to(dtype)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[torch.rand(B, T, generator=g) < ignore_frac] = -100
    return logits, labels
