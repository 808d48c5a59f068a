"""Label-probability heatmap over one solution (the paper's Figure 2), as a PNG and a hover-able HTML page.

For every response token: the gold-token probability p that the model gives it in context, the top-k
mass P_topk of that position, whether SED-SFT's penalty would be active there (P_topk < tau: an
unrestricted position whose probability the penalty pushes towards 1/2; positions with P_topk >= tau
are masked out of the penalty) and the most probable alternatives. Token text is what the tokenizer
decodes for that token in context (so multi-byte characters split over tokens are shown once, on the
token that completes them). The numbers come from :func:`sedsft.scoring.score_batch`, the routine
calibration uses; the ``[T, vocab]`` logits are never held. tau is given, or calibrated with
:func:`sedsft.calibrate.calibrate_records` exactly as ``sedsft calibrate`` would.
"""

from __future__ import annotations

import html
import os
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, to_hex
from matplotlib.patches import Rectangle

from sedsft.calibrate import check_tau, pad_id
from sedsft.errors import UserError, check_number
from sedsft.io import atomic_write_json, atomic_write_text
from sedsft.prompts import DEFAULT_SYSTEM_PROMPT
from sedsft.scoring import MAX_TOP_K, check_length, check_top_k, eval_mode, score_batch

from .inputs import MAX_LENGTH, TokenizedRecord, tokenize_records
from .plots import new_figure, save_png

CMAP = "RdYlGn"  # low probability red, high green
_CONTEXT = 8  # tokens of left context used to decode one token


@dataclass
class TokenScore:
    """One response token and what the model thinks of it at the position that predicts it."""

    index: int  # position of the token in input_ids (predicted by position index - 1)
    token_id: int
    text: str  # decoded in context
    prob: float  # gold-token probability p
    topk_mass: float  # P_topk of the predicting position
    penalized: bool | None  # SED penalty active (P_topk < tau); None when no tau was given
    alternatives: list[
        tuple[str, float]
    ]  # the most probable next tokens (decoded alone) and their probabilities


@dataclass
class TokenHeatmap:
    tokens: list[TokenScore]
    prompt_text: str  # everything before the first response token, decoded
    top_k: int
    tau: float | None
    files: dict[str, Path] = field(default_factory=dict)


def token_texts(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text each token adds when the sequence is decoded (special tokens kept, partial characters held back)."""
    out = []

    def dec(window):
        text = tokenizer.decode(list(window), skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return text.rstrip("\ufffd")  # a character whose bytes are not all in yet

    for i in range(len(ids)):
        lo = max(0, i - _CONTEXT)
        before, upto = dec(ids[lo:i]), dec(ids[lo : i + 1])
        out.append(upto[len(before) :] if upto.startswith(before) else dec(ids[i : i + 1]))
    return out


def score_tokens(
    model,
    tokenizer,
    example: TokenizedRecord | dict,
    *,
    top_k: int = 2,
    tau: float | None = None,
    num_alternatives: int = 5,
    chunk_size: int | None = None,
) -> TokenHeatmap:
    """Per-token gold probability, P_topk and top alternatives over the label tokens of one tokenized example."""
    from sedsft.data import SFTCollator

    top_k = check_top_k(top_k)
    num_alternatives = check_number("num_alternatives", num_alternatives, low=0, high=MAX_TOP_K, integer=True)
    tau = None if tau is None else check_tau(tau)
    if isinstance(example, dict):
        example = TokenizedRecord(
            index=0,
            input_ids=[int(x) for x in example["input_ids"]],
            labels=[int(x) for x in example["labels"]],
        )
    if all(x == -100 for x in example.labels[1:]):
        raise UserError("the example has no response (label) tokens to show; check its response field")
    check_length(model, len(example.input_ids))
    batch = SFTCollator(pad_id(tokenizer))([example.row()])
    with eval_mode(model):
        scored = score_batch(
            model, batch, top_k=max(top_k, num_alternatives), positions="labels", chunk_size=chunk_size
        )
    stats = scored.stats
    targets = (scored.position + 1).tolist()  # the token each scored position predicts
    probs = stats.prob.tolist()
    masses = stats.topk_mass(min(top_k, stats.max_k)).tolist()
    alt_p = stats.top_logp[:, :num_alternatives].exp().tolist()
    alt_i = stats.top_ids[:, :num_alternatives].tolist()
    texts = token_texts(tokenizer, example.input_ids)
    tokens = [
        TokenScore(
            index=j,
            token_id=example.input_ids[j],
            text=texts[j],
            prob=probs[n],
            topk_mass=masses[n],
            penalized=None if tau is None else bool(masses[n] < tau),
            alternatives=[
                (tokenizer.decode([i], skip_special_tokens=False), p) for i, p in zip(alt_i[n], alt_p[n])
            ],
        )
        for n, j in enumerate(targets)
    ]
    prompt = tokenizer.decode(example.input_ids[: targets[0]], skip_special_tokens=False)
    return TokenHeatmap(tokens=tokens, prompt_text=prompt, top_k=top_k, tau=tau)


def _colour(p: float) -> str:
    rgb = np.array(colormaps[CMAP](float(p))[:3])
    return to_hex(0.3 + 0.7 * rgb)  # lightened so black text stays readable


def _legend(hm: TokenHeatmap) -> str:
    if hm.tau is None:
        return f"colour: gold-token probability p; P_top{hm.top_k} = top-{hm.top_k} mass (no tau given)"
    n_pen = sum(t.penalized for t in hm.tokens)
    return (
        f"colour: gold-token probability p; outlined: SED penalty active (P_top{hm.top_k} < tau = {hm.tau:.4f}), "
        f"{n_pen} of {len(hm.tokens)} tokens"
    )


# ----------------------------------------------------------------------------- PNG


def _display(text: str) -> tuple[str, bool]:
    """Visible form of a token (tabs and newlines drawn as arrows) and whether it ends the line."""
    ends = text.endswith("\n")
    shown = text.replace("\t", "\u2192").replace("\r", "").replace("\n", "\u21b5")
    return (shown or "\u00b7"), ends  # an empty piece (partial character) still gets a cell


def render_png(
    hm: TokenHeatmap, path: str | os.PathLike, *, chars_per_line: int = 90, title: str | None = None
) -> Path:
    """The tokens in reading order, wrapped, each on a background coloured by its gold probability."""
    cells, col, line = [], 0, 0  # (line, col, text, token)
    for tok in hm.tokens:
        shown, ends = _display(tok.text)
        while shown:
            if col > 0 and col + len(shown) > chars_per_line:
                line, col = line + 1, 0
            piece, shown = shown[:chars_per_line], shown[chars_per_line:]
            cells.append((line, col, piece, tok))
            col += len(piece)
        if ends:
            line, col = line + 1, 0
    n_lines = line + 1
    cw, lh = 6.6 / 72, 15.0 / 72  # cell width and line height in inches at font size 10
    left, right, top, bottom = 0.3, 0.3, 0.8, 0.95
    width = max(chars_per_line * cw + left + right, 6.0)
    height = n_lines * lh + top + bottom
    fig = new_figure(width, height)
    fig.set_layout_engine(None)  # exact placement: one data unit = one character cell
    ax = fig.add_axes([left / width, bottom / height, chars_per_line * cw / width, n_lines * lh / height])
    ax.set_xlim(0, chars_per_line)
    ax.set_ylim(n_lines, 0)
    for ln, c, piece, tok in cells:
        pen = bool(tok.penalized)
        ax.add_patch(
            Rectangle(
                (c, ln + 0.06),
                len(piece),
                0.88,
                facecolor=_colour(tok.prob),
                edgecolor="black" if pen else "none",
                linewidth=0.9 if pen else 0,
            )
        )
        ax.text(c, ln + 0.5, piece, fontsize=10, family="DejaVu Sans Mono", va="center", ha="left")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel(f"response tokens in reading order, wrapped at {chars_per_line} characters", fontsize=8)
    fig.text(
        0.5,
        1 - 0.15 / height,
        title or "Gold-token probability over the response",
        fontsize=11,
        ha="center",
        va="top",
    )
    legend = textwrap.fill(_legend(hm), width=int((width - 0.4) * 72 / (8 * 0.55)))
    fig.text(0.5, 1 - 0.45 / height, legend, fontsize=8, ha="center", va="top", color="#333")
    cax = fig.add_axes([0.25, 0.42 / height, 0.5, 0.12 / height])
    fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps[CMAP]), cax=cax, orientation="horizontal")
    cax.set_xlabel("gold-token probability p (0-1)", fontsize=8, labelpad=1)
    cax.tick_params(labelsize=7, pad=1)
    return save_png(fig, path)


# ----------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 60em; }
.prompt { color: #666; white-space: pre-wrap; font-family: monospace; border-left: 3px solid #ccc; padding-left: 1em; }
.text { font-family: monospace; font-size: 15px; line-height: 1.9; white-space: pre-wrap; word-break: break-all; }
.tok { position: relative; border-radius: 2px; padding: 1px 0; }
.tok.pen { outline: 1px solid #000; }
.tok.nl::before { content: "\\21B5"; color: #888; }
.tok:empty::before { content: "\\00B7"; color: #888; }
.tok:hover::after, .tok:focus::after {
  content: attr(data-tip); position: absolute; left: 0; top: 1.8em; z-index: 10; white-space: pre;
  background: #222; color: #fff; font-size: 12px; line-height: 1.4; padding: 0.5em 0.7em; border-radius: 4px;
}
.legend { font-size: 13px; color: #333; }
"""


def _fmt(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 or p == 0 else f"{p:.1e}"


def _tip(tok: TokenScore, hm: TokenHeatmap) -> str:
    k = hm.top_k
    if tok.penalized is None:
        sed = "SED: no tau given"
    elif tok.penalized:
        sed = f"SED: penalty active (P_top{k} < tau = {hm.tau:.4f})"
    else:
        sed = f"SED: masked out, confident position (P_top{k} >= tau = {hm.tau:.4f})"
    lines = [
        f"token {tok.text!r} (id {tok.token_id})",
        f"p = {_fmt(tok.prob)}",
        f"P_top{k} = {_fmt(tok.topk_mass)}",
        sed,
    ]
    if tok.alternatives:
        lines.append("top alternatives:")
        lines += [f"  {_fmt(p):>7}  {t!r}" for t, p in tok.alternatives]
    return "\n".join(lines)


def render_html(hm: TokenHeatmap, *, title: str | None = None) -> str:
    """A standalone page: hover (or focus) a token to see p, P_topk, SED's decision and the top alternatives."""
    title = title or "Gold-token probability over the response"
    spans = []
    for tok in hm.tokens:
        classes = "tok" + (" pen" if tok.penalized else "") + (" nl" if tok.text.endswith("\n") else "")
        tip = html.escape(_tip(tok, hm), quote=True).replace("\n", "&#10;")
        spans.append(
            f'<span class="{classes}" tabindex="0" style="background:{_colour(tok.prob)}" '
            f'data-p="{tok.prob:.6g}" data-tip="{tip}">{html.escape(tok.text, quote=True)}</span>'
        )
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<h1>{html.escape(title)}</h1>\n<p class="legend">{html.escape(_legend(hm))}. '
        "Hover a token for details.</p>\n"
        f'<h2>Prompt</h2>\n<div class="prompt">{html.escape(hm.prompt_text)}</div>\n'
        f'<h2>Response</h2>\n<div class="text">{"".join(spans)}</div>\n</body>\n</html>\n'
    )


# ----------------------------------------------------------------------------- end to end


def analyze_heatmap(
    model,
    tokenizer,
    record: dict,
    *,
    top_k: int = 2,
    tau: float | None = None,
    num_alternatives: int = 5,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    max_length: int | None = MAX_LENGTH,
    overflow: str = "truncate",
    limit_reason: str = "--max_length",
    output_dir: str | os.PathLike | None = None,
    name: str = "heatmap",
    title: str | None = None,
) -> TokenHeatmap:
    """Score one record as SFT tokenizes it; with ``output_dir`` write ``{name}.png``, ``{name}.html``, ``{name}.json``."""
    examples = tokenize_records(
        tokenizer,
        [record],
        system_prompt=system_prompt,
        max_length=max_length,
        overflow=overflow,
        limit_reason=limit_reason,
    )
    if not examples:
        raise UserError("the record has no response token left after tokenization; give it a response")
    hm = score_tokens(model, tokenizer, examples[0], top_k=top_k, tau=tau, num_alternatives=num_alternatives)
    if output_dir is not None:
        out = Path(output_dir)
        hm.files = {
            "figure": render_png(hm, out / f"{name}.png", title=title),
            "html": atomic_write_text(out / f"{name}.html", render_html(hm, title=title)),
            "data": atomic_write_json(
                out / f"{name}.json",
                {
                    "top_k": hm.top_k,
                    "tau": hm.tau,
                    "prompt": hm.prompt_text,
                    "tokens": [asdict(t) for t in hm.tokens],
                },
            ),
        }
    return hm


__all__ = [
    "TokenHeatmap",
    "TokenScore",
    "analyze_heatmap",
    "render_html",
    "render_png",
    "score_tokens",
    "token_texts",
]
