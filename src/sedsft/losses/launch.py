"""Which Triton kernel configurations can launch where: device limits, offline compilation, and the one choice.

Each GPU engine lists, per kernel, the configurations it can launch in order of preference (a list of
:class:`Launch`). :func:`choose` takes the first that fits the device: its shared memory within the
device's opt-in limit per block, no register spills. The same :func:`choose` serves the engine at run
time and the offline check (``benchmarks/compile_check.py``, the tests); only where the resources come
from differs. Resources come from :func:`compile_offline`, which builds the kernel for a named
architecture with Triton's bundled ptxas and reads the cubin (``cuobjdump -res-usage``): no GPU or driver
is needed, so every architecture can be checked on a CPU machine, and on a GPU the check costs one
compilation per configuration (cached for the process).

    limits = ARCH_LIMITS[86]                                   # or device_limits(torch.device("cuda"))
    best = choose(options, limits, lambda l: compile_offline(l, limits.arch))
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DeviceLimits:
    """What a kernel may use on one GPU generation."""

    arch: int  # compute capability as major * 10 + minor: 80, 86, 89, 90
    shared_bytes: int  # shared memory per block, opt-in (torch: shared_memory_per_block_optin)
    registers: int = 255  # per thread


# The opt-in shared memory per block of each generation (CUDA programming guide, compute capabilities table).
ARCH_LIMITS: dict[int, DeviceLimits] = {
    80: DeviceLimits(80, 163 * 1024),  # A100, A800
    86: DeviceLimits(86, 99 * 1024),  # A10, A40, RTX 30xx
    89: DeviceLimits(89, 99 * 1024),  # L4, L40S, RTX 40xx
    90: DeviceLimits(90, 227 * 1024),  # H100, H200, H800
}


def device_limits(device: torch.device) -> DeviceLimits:
    """The limits of the CUDA device at hand, read from the driver."""
    props = torch.cuda.get_device_properties(device)
    return DeviceLimits(props.major * 10 + props.minor, int(props.shared_memory_per_block_optin))


@dataclass(frozen=True)
class Launch:
    """One compiled configuration of a kernel: its argument types and the compile-time constants."""

    name: str  # the kernel's role, e.g. "row_stats"
    kernel: object = field(repr=False)  # the @triton.jit function
    signature: dict[str, str] = field(
        repr=False
    )  # argument -> Triton type: "*bf16", "i32", "fp32", "constexpr"
    constexprs: dict[str, object] = field(
        repr=False
    )  # the "constexpr" arguments' values (None for absent pointers)
    num_warps: int = 4
    num_stages: int = 2
    # integer arguments that are multiples of 16 at run time (sizes, row strides): the JIT specializes on
    # them (tt.divisibility), and so must the offline compilation, or loads are neither vectorized nor
    # pipelined there and its registers and shared memory are not those of the kernel that runs
    multiple_of_16: tuple[str, ...] = ()

    @property
    def config(self) -> str:
        """A stable, readable name of this configuration (a row key of the compile-check table)."""
        consts = " ".join(f"{k}={v}" for k, v in sorted(self.constexprs.items()) if v is not None)
        types = ",".join(sorted({t for t in self.signature.values() if t.startswith("*")}))
        return f"{self.name} [{types}] {consts} warps={self.num_warps} stages={self.num_stages}"


@dataclass(frozen=True)
class Resources:
    registers: int  # per thread
    spills: int  # bytes of local memory per thread (register spills, stack)
    shared_bytes: int  # dynamic shared memory the launch asks for


def fits(res: Resources, limits: DeviceLimits) -> str | None:
    """Why a kernel with these resources cannot launch (or should not: it spills) on ``limits``, or None."""
    if res.shared_bytes > limits.shared_bytes:
        return f"needs {res.shared_bytes} B of shared memory, sm_{limits.arch} has {limits.shared_bytes}"
    if res.registers > limits.registers:
        return f"needs {res.registers} registers per thread, sm_{limits.arch} has {limits.registers}"
    if res.spills:
        return f"spills {res.spills} B per thread to local memory"
    return None


def choose(
    options: list[Launch], limits: DeviceLimits, resources: Callable[[Launch], Resources]
) -> Launch | None:
    """The first of ``options`` (in preference order) that fits ``limits``; None when none does."""
    for launch in options:
        if fits(resources(launch), limits) is None:
            return launch
    return None


def chosen(engine, device: torch.device, **call) -> dict[str, Launch] | None:
    """For each kernel ``engine`` launches for this call, the configuration it launches on ``device``.

    ``engine`` is a GPU engine module (its ``launch_options(**call)``); None when some kernel has no
    configuration that fits the device. Resources come from :func:`compile_offline` for the device's
    architecture; the choice is cached per (engine, device, call), so a call costs a dict look-up.
    """
    limits = device_limits(device)
    key = (engine.__name__, device.index, limits, tuple(sorted(call.items())))
    if key not in _CHOSEN:
        picks: dict[str, Launch] | None = {}
        for name, options in engine.launch_options(**call).items():
            pick = choose(options, limits, lambda lch: compile_offline(lch, limits.arch))
            if pick is None:
                picks = None
                break
            picks[name] = pick
        _CHOSEN[key] = picks
    return _CHOSEN[key]


_CHOSEN: dict[tuple, dict[str, Launch] | None] = {}


def run(lch: Launch, grid, **args) -> None:
    """Launch ``lch``'s kernel with exactly its constants, warps and stages (what the compile check checked)."""
    lch.kernel[grid](**args, **lch.constexprs, num_warps=lch.num_warps, num_stages=lch.num_stages)


def _tool(name: str) -> str:
    import triton

    bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    return bundled if os.path.exists(bundled) else name


def compile_offline(launch: Launch, arch: int, *, keep_dir: str | None = None) -> Resources:
    """Compile ``launch`` for ``sm_<arch>`` without a GPU and read its resources off the cubin.

    Raises whatever Triton raises when the configuration does not compile (the compile check records it).
    """
    key = (launch.kernel, tuple(launch.signature.items()), tuple(launch.constexprs.items()))
    key += (launch.num_warps, launch.num_stages, launch.multiple_of_16, arch)
    if key not in _COMPILED or keep_dir:
        _COMPILED[key] = _compile(launch, arch, keep_dir)
    return _COMPILED[key]


_COMPILED: dict[tuple, Resources] = {}  # one compilation per configuration and architecture per process


def _compile(launch: Launch, arch: int, keep_dir: str | None) -> Resources:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    # the JIT's specialization at run time: pointers 16-byte aligned (torch's allocations), and the integers
    # the engine declares multiples of 16 (an integer equal to 1 becomes a constant there: pass it as one)
    names = list(launch.kernel.arg_names)
    attrs = {
        (names.index(arg),): [["tt.divisibility", 16]]
        for arg, typ in launch.signature.items()
        if typ.startswith("*") or arg in launch.multiple_of_16
    }
    src = ASTSource(
        fn=launch.kernel, signature=dict(launch.signature), constexprs=dict(launch.constexprs), attrs=attrs
    )
    compiled = triton.compile(
        src,
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": launch.num_warps, "num_stages": launch.num_stages},
    )
    usage = _resource_usage(
        compiled.asm["cubin"], keep_dir=keep_dir, stem=f"{launch.name}_sm{arch}_{compiled.hash[:12]}"
    )
    return Resources(usage["REG"], usage["LOCAL"] + usage["STACK"], int(compiled.metadata.shared))


def _resource_usage(cubin: bytes, *, keep_dir: str | None, stem: str) -> dict[str, int]:
    """REG, STACK, SHARED, LOCAL of the (one) kernel in ``cubin``, from ``cuobjdump -res-usage``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(keep_dir or tmp, stem + ".cubin")
        if keep_dir:
            os.makedirs(keep_dir, exist_ok=True)
        with open(path, "wb") as f:
            f.write(cubin)
        out = subprocess.run(
            [_tool("cuobjdump"), "-res-usage", path], capture_output=True, text=True, check=True
        ).stdout
    fields = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", out))
    if "REG" not in fields:
        raise RuntimeError(f"cuobjdump printed no resource usage for {stem}: {out!r}")
    return {k: int(fields.get(k, 0)) for k in ("REG", "STACK", "SHARED", "LOCAL")}


# ---- what both Triton engines share: can they run here, the kernel module, tl.dot options ------------

MAX_TOP_K = 32  # the running top-k is unrolled; beyond this the torch engine serves
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def unsupported(device: torch.device, dtype: torch.dtype, *, top_k: int = 1) -> str | None:
    """Why no Triton engine can serve these inputs, or None when one can (resources are checked separately)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return "Triton is not installed (CUDA builds of PyTorch on Linux ship it; else pip install triton)"
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return "CPU tensors run the Triton kernels only under TRITON_INTERPRET=1 (the tests' interpreter)"
    if device.type not in ("cpu", "cuda"):
        return f"the Triton kernels run on CUDA tensors, not {device.type}"
    if dtype not in DTYPES:
        return f"the Triton path takes fp32, bf16 or fp16 inputs, not {dtype}"
    if (
        device.type == "cuda"
        and dtype == torch.bfloat16
        and torch.cuda.get_device_capability(device) < (8, 0)
    ):
        return "bf16 tl.dot needs a GPU of compute capability >= 8.0"
    if top_k > MAX_TOP_K:
        return f"top_k={top_k} is above the kernels' running top-k limit of {MAX_TOP_K}"
    return None


def kernel_module(module, device: torch.device):
    """``module`` (a module of @triton.jit kernels), checked to run on ``device`` in this process."""
    import triton.language as tl

    interpreted = any(type(v).__name__ == "InterpretedFunction" for v in vars(module).values())
    if device.type == "cpu" and not interpreted:
        raise RuntimeError(
            "sedsft's Triton kernels were loaded for the GPU in this process and cannot run on CPU tensors"
        )
    if interpreted and type(tl.zeros).__name__ != "InterpretedFunction":
        raise RuntimeError("TRITON_INTERPRET=1 must be set before triton is first imported in the process")
    return module


@functools.lru_cache(maxsize=8)
def sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def dot_options(device: torch.device, dtype: torch.dtype) -> dict:
    """``tl.dot`` options: the interpreter gets exact fp32 products (bf16 tiles up-cast, see the kernels)."""
    if device.type != "cuda":
        return {"UPCAST": dtype == torch.bfloat16, "PRECISION": "ieee"}
    if dtype == torch.float32:  # follow torch's own setting for fp32 matmuls
        return {
            "UPCAST": False,
            "PRECISION": "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32",
        }
    return {"UPCAST": False, "PRECISION": None}


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
