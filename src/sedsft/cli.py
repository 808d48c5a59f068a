"""The `sedsft` command: a thin dispatcher. Each sub-command lives with the code it drives.

Every sub-command is a function ``main(argv: list[str]) -> int`` imported lazily, so ``sedsft --help``
stays fast and a sub-command's heavy imports (TRL, vLLM) load only when it runs.
"""

from __future__ import annotations

import importlib
import os
import sys

# name -> ("module", "one-line help")
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("sedsft.demo.cli", "run the paper's SFT -> RL -> eval comparison on a laptop CPU"),
    "sft": ("sedsft.train.cli", "supervised fine-tuning with any objective (CE, GEM, DFT, SED-SFT)"),
    "calibrate": ("sedsft.calibrate_cli", "compute tau for SED-SFT from a model and data sample"),
    "grpo": ("sedsft.rl.cli", "GRPO with verifiable math rewards"),
    "filter": ("sedsft.rl.filter_cli", "offline difficulty filtering of RL prompts"),
    "export-verl": ("sedsft.rl.verl_cli", "write RL data and a reward module for the verl framework"),
    "eval": ("sedsft.eval.cli", "the paper's math evaluation: 8 benchmarks, Avg@k, Self-BLEU"),
    "analyze": ("sedsft.analysis.cli", "token exploration space (topk) and label-probability heatmaps"),
    "sweep": ("sedsft.analysis.sweep_cli", "sensitivity sweep over the masking ratio r and top-k"),
    "selfcheck": ("sedsft.selfcheck", "check every objective against its reference in a few seconds"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: sedsft <command> [options]   (sedsft <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from sedsft import __version__

        print(f"sedsft {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"sedsft: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        print(
            "sedsft: interrupted; finished work is saved, rerun the same command to resume", file=sys.stderr
        )
        return 130
    except (ValueError, OSError, KeyError) as e:
        # Bad input: one line that says what to change. SEDSFT_DEBUG=1 shows the traceback.
        if os.environ.get("SEDSFT_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"sedsft {name}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
