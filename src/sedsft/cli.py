"""The `sedsft` command: a thin dispatcher. Each sub-command lives with the code it drives.

Every sub-command is a function ``main(argv: list[str]) -> int`` imported lazily, so ``sedsft --help``
stays fast and a sub-command's heavy imports (TRL, vLLM) load only when it runs. Sub-commands parse
their options with :mod:`sedsft.cli_parse` and open their output folders with :mod:`sedsft.runs`.

What the user sees when a command stops early:
- a :class:`~sedsft.errors.UserError` (input to change): ``sedsft <command>: error: <message>``, one
  line on stderr, exit status 2 (``SEDSFT_DEBUG=1`` shows its traceback too);
- an optional dependency that is not installed: the same one line, naming the extra to install;
- any other exception is a bug: Python's traceback, exit status 1;
- Ctrl-C: one line, exit status 130; a second Ctrl-C while it winds down exits at once, quietly.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys

from sedsft.errors import UserError
from sedsft.extras import missing_extra_message

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


# What Ctrl-C leaves behind: every command with an output folder resumes when rerun (sedsft.runs).
RESUMES = "finished work is saved; rerun the same command to resume"
INTERRUPTED = {"calibrate": "nothing was written", "selfcheck": "nothing was written"}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: sedsft <command> [options]   (sedsft <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    real_process = argv is None  # the console script, not a test calling main([...])
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
        print(
            f"sedsft: error: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr
        )
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        if real_process:
            _quiet_interrupts()
        print(f"sedsft {name}: interrupted; {INTERRUPTED.get(name, RESUMES)}", file=sys.stderr)
        return 130
    except UserError as e:
        # Input the user must change: one line. Any other exception is a bug and keeps its traceback.
        if os.environ.get("SEDSFT_DEBUG"):
            raise
        print(f"sedsft {name}: error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        # An optional dependency of this command that the core install leaves out: one line naming the extra.
        message = missing_extra_message(e)
        if message is None or os.environ.get("SEDSFT_DEBUG"):
            raise
        print(f"sedsft {name}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the output went to `| head`, which stopped reading: not an error
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- Python flushes stdout at exit
        return 0
    finally:  # the command's run folders are free again, also when main() is called in-process
        if "sedsft.run_lock" in sys.modules:
            sys.modules["sedsft.run_lock"].release_all()


def _quiet_interrupts() -> None:
    """A second Ctrl-C while the process winds down (worker pools, atexit) exits without a traceback."""
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))


if __name__ == "__main__":
    sys.exit(main())
