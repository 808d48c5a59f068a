"""Sampling backends: one interface, ``generate(prompts, cfg) -> n samples per prompt``.

Prompts are already-rendered text (chat template applied, see ``sedsft.prompts.render_prompt``).
``HFBackend`` runs Transformers ``generate`` anywhere, CPU included, from an in-memory model (the
demo, the GRPO filter) or a local path. ``VLLMBackend`` uses vLLM when it is installed (GPU only).

Determinism: a backend's output depends only on (prompts, cfg), ``cfg.seed`` included, so callers
that fix how prompts are grouped (the eval runner seeds every batch from its problem ids) get the
same samples when a run is resumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sedsft.errors import UserError, check_count, check_number


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample. Hashable, so it can key a protocol table."""

    temperature: float = field(default=0.7, metadata={"help": "softmax temperature; 0 = greedy"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass in (0, 1]"})
    max_new_tokens: int = field(default=4096, metadata={"help": "generation budget per sample"})
    n: int = field(default=1, metadata={"help": "samples per prompt"})
    seed: int = field(default=0, metadata={"help": "random seed of this call"})

    def __post_init__(self):
        check_number("temperature", self.temperature, low=0)
        check_number("top_p", self.top_p, low=0, high=1, open_low=True)
        check_count("max_new_tokens", self.max_new_tokens)
        check_count("n", self.n)
        check_count("seed", self.seed, minimum=0)


@dataclass(frozen=True)
class Sample:
    """One generated completion."""

    text: str
    num_tokens: int
    mean_entropy: float | None = None  # mean over its tokens of the untempered next-token entropy (nats)
    truncated: bool = False  # stopped by max_new_tokens, not by an end-of-sequence token


class Backend(Protocol):
    tokenizer: object  # renders prompts (chat template)

    def generate(self, prompts: list[str], cfg: SamplingConfig) -> list[list[Sample]]: ...


class HFBackend:
    """Transformers ``generate``: batched, left-padded, seeded from ``cfg.seed`` without touching global RNG."""

    def __init__(self, model, tokenizer, *, batch_size: int = 8, compute_entropy: bool = True):
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.compute_entropy = compute_entropy

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        tokenizer: str | Path | None = None,
        dtype: str = "auto",
        device: str | None = None,
        trust_remote_code: bool = False,
        batch_size: int = 8,
    ) -> HFBackend:
        """Load a local checkpoint (model + tokenizer); ``device`` defaults to CUDA when available."""
        from sedsft.models import load_local_model

        model, tokenizer = load_local_model(
            path, tokenizer_path=tokenizer, dtype=dtype, device=device, trust_remote_code=trust_remote_code
        )
        return cls(model, tokenizer, batch_size=batch_size)

    def generate(self, prompts: list[str], cfg: SamplingConfig) -> list[list[Sample]]:
        import torch

        rows = [p for p in prompts for _ in range(cfg.n)]  # prompt i's samples are rows i*n .. i*n+n-1
        device = next(self.model.parameters()).device
        devices = [device] if device.type == "cuda" else []
        samples: list[Sample] = []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(cfg.seed)
            for start in range(0, len(rows), self.batch_size):
                samples += self._generate_batch(rows[start : start + self.batch_size], cfg, device)
        return [samples[i * cfg.n : (i + 1) * cfg.n] for i in range(len(prompts))]

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        return set(eos) if isinstance(eos, list) else {eos} if eos is not None else set()

    def _generate_batch(self, texts: list[str], cfg: SamplingConfig, device) -> list[Sample]:
        import torch
        from transformers import LogitsProcessorList

        tok = self.tokenizer
        side = tok.padding_side
        tok.padding_side = "left"  # generation continues from the right end of every row
        try:
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        finally:
            tok.padding_side = side
        eos_ids = self._eos_ids()
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else min(eos_ids, default=0)
        entropy = _EntropyRecorder()
        out = self.model.generate(
            **enc,
            max_new_tokens=cfg.max_new_tokens,
            do_sample=cfg.temperature > 0,
            temperature=cfg.temperature if cfg.temperature > 0 else None,
            top_p=cfg.top_p if cfg.temperature > 0 else None,
            top_k=0,  # no top-k or repetition penalty from the checkpoint's generation_config: as vLLM
            repetition_penalty=1.0,
            pad_token_id=pad_id,
            eos_token_id=sorted(eos_ids) or None,
            logits_processor=LogitsProcessorList([entropy] if self.compute_entropy else []),
        )
        gen = out[:, enc["input_ids"].shape[1] :]  # [B, T]
        steps = torch.stack(entropy.steps, dim=1) if entropy.steps else None  # [B, T]
        samples = []
        for r in range(gen.shape[0]):
            ids = gen[r].tolist()
            stop = next((t for t, x in enumerate(ids) if x in eos_ids), None)
            count = len(ids) if stop is None else stop + 1  # the end-of-sequence token counts
            mean_ent = float(steps[r, :count].mean()) if steps is not None and count else None
            text = tok.decode(ids[:count], skip_special_tokens=True)
            samples.append(
                Sample(text, count, mean_ent, truncated=stop is None and count >= cfg.max_new_tokens)
            )
        return samples


class _EntropyRecorder:
    """A logits processor that leaves scores unchanged and keeps each step's entropy.

    Transformers runs user processors before the temperature/top-p warpers, so this sees the
    model's own distribution (what Table 2's token entropy measures), not the sampling one.
    """

    def __init__(self):
        self.steps: list = []

    def __call__(self, input_ids, scores):
        import torch

        with torch.no_grad():  # a statistic, no gradient
            logp = torch.log_softmax(scores.float(), dim=-1)  # [B, V]
            self.steps.append(-(logp.exp() * logp).nan_to_num().sum(-1).cpu())  # [B]
        return scores


class VLLMBackend:
    """vLLM's offline ``LLM.generate`` (GPU). Each prompt gets seed ``cfg.seed + i`` so batches don't matter."""

    def __init__(self, llm):
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        tokenizer: str | Path | None = None,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
    ) -> VLLMBackend:
        try:
            from vllm import LLM
        except ImportError as e:
            raise UserError("vLLM is not installed; pip install 'sedsft[vllm]' or use --backend hf") from e
        llm = LLM(
            model=str(path),
            tokenizer=str(tokenizer) if tokenizer is not None else None,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
        )
        return cls(llm)

    def generate(self, prompts: list[str], cfg: SamplingConfig) -> list[list[Sample]]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                n=cfg.n,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                max_tokens=cfg.max_new_tokens,
                seed=cfg.seed + i,
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [
            [
                Sample(o.text, len(o.token_ids), None, truncated=o.finish_reason == "length")
                for o in out.outputs
            ]
            for out in outputs
        ]


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def load_backend(
    model: str,
    *,
    backend: str = "auto",
    tokenizer: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
    tensor_parallel_size: int = 1,
    batch_size: int = 8,
) -> HFBackend | VLLMBackend:
    """A backend for the local checkpoint ``model``: vLLM for "vllm", or for "auto" when vLLM and a GPU
    are there; Transformers ``generate`` otherwise. Shared by ``sedsft eval`` and ``sedsft filter``."""
    import torch

    from sedsft.models import check_local_model, check_tokenizer_folder

    if backend not in ("auto", "hf", "vllm"):
        raise UserError(f"backend must be auto, hf or vllm, got {backend!r}")
    model = check_local_model(model)
    if backend == "vllm" or (backend == "auto" and vllm_available() and torch.cuda.is_available()):
        check_tokenizer_folder(tokenizer or model, flag="--tokenizer" if tokenizer else "--model")
        return VLLMBackend.from_pretrained(
            model,
            tokenizer=tokenizer,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            tensor_parallel_size=tensor_parallel_size,
        )
    return HFBackend.from_pretrained(
        model,
        tokenizer=tokenizer,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        batch_size=batch_size,
    )


def backend_from_options(model, options, *, batch_size: int) -> HFBackend | VLLMBackend:
    """:func:`load_backend` from the option groups eval and filter share (``sedsft.cli_parse``)."""
    return load_backend(
        model.model,
        backend=options.backend,
        tokenizer=model.tokenizer,
        dtype=model.dtype,
        device=model.device,
        trust_remote_code=model.trust_remote_code,
        tensor_parallel_size=options.tensor_parallel_size,
        batch_size=batch_size,
    )
