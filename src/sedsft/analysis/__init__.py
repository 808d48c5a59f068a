"""The paper's analysis: token exploration space (Figure 3), label-probability heatmaps (Figure 2), r/k sweeps (Table 3).

from sedsft.analysis import analyze_topk, analyze_heatmap, run_sweep
report = analyze_topk(model, tokenizer, records, max_k=10, output_dir="out/topk")
report.tau(top_k=2, mask_ratio=0.7)              # the tau sedsft calibrate finds on the same records
hm = analyze_heatmap(model, tokenizer, records[0], top_k=2, tau=0.8, output_dir="out/heatmap")
result = run_sweep(grid([0.5, 0.7, 0.9], [2, 3]), run_point, output_dir="out/sweep")
"""

from .heatmap import (
    TokenHeatmap,
    TokenScore,
    analyze_heatmap,
    render_html,
    render_png,
    score_tokens,
)
from .sweep import SweepPoint, SweepResult, grid, run_sweep
from .topk import TopkDistribution, TopkReport, analyze_topk, topk_distribution

__all__ = [
    "SweepPoint",
    "SweepResult",
    "TokenHeatmap",
    "TokenScore",
    "TopkDistribution",
    "TopkReport",
    "analyze_heatmap",
    "analyze_topk",
    "grid",
    "render_html",
    "render_png",
    "run_sweep",
    "score_tokens",
    "topk_distribution",
]
