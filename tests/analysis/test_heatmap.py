"""Per-token heatmap: numbers against an fp64 softmax of the model's own logits, HTML escaping and order,
PNG validity, bad tau and oversized records refused in one line."""

from __future__ import annotations

import html
from html.parser import HTMLParser

import pytest
import torch

from sedsft.analysis.heatmap import analyze_heatmap, render_html, score_tokens, token_texts
from sedsft.analysis.inputs import tokenize_records
from sedsft.errors import UserError

from .helpers import check_png


class _Tokens(HTMLParser):
    """Text inside each <span class="tok ..."> of the response, in document order."""

    def __init__(self):
        super().__init__()
        self.tokens, self._in = [], False

    def handle_starttag(self, tag, attrs):
        if tag == "span" and "tok" in (dict(attrs).get("class") or "").split():
            self._in = True
            self.tokens.append("")

    def handle_endtag(self, tag):
        if tag == "span":
            self._in = False

    def handle_data(self, data):
        if self._in:
            self.tokens[-1] += data


def test_scores_match_the_logits(model, tokenizer, records):
    ex = tokenize_records(tokenizer, [records[0]])[0]
    hm = score_tokens(model, tokenizer, ex, top_k=3, tau=0.5, num_alternatives=5, chunk_size=4)
    with torch.no_grad():
        probs = model(input_ids=torch.tensor([ex.input_ids])).logits[0].double().softmax(-1)  # [T, V]
    targets = [j for j in range(1, len(ex.labels)) if ex.labels[j] != -100]
    assert [t.index for t in hm.tokens] == targets
    for t in hm.tokens:
        row = probs[t.index - 1]
        assert t.prob == pytest.approx(row[t.token_id].item(), abs=1e-6)
        top = row.topk(5)
        assert t.topk_mass == pytest.approx(top.values[:3].sum().item(), abs=1e-6)
        assert [p for _, p in t.alternatives] == pytest.approx(top.values.tolist(), abs=1e-6)
        assert t.penalized == (t.topk_mass < 0.5)


def test_token_texts_rebuild_the_text(tokenizer):
    text = '<|im_start|>user\nA & B < C\t"q"<|im_end|>'
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert "".join(token_texts(tokenizer, ids)) == text


def test_html_has_every_token_in_order_escaped(model, tokenizer, records, tmp_path):
    record = records[2]  # its response holds <b>, & and quotes
    hm = analyze_heatmap(model, tokenizer, record, tau=0.6, output_dir=tmp_path, name="ex")
    page = (tmp_path / "ex.html").read_text(encoding="utf-8")
    parser = _Tokens()
    parser.feed(page)
    assert parser.tokens == [t.text for t in hm.tokens]
    assert "".join(parser.tokens) == record["response"] + "<|im_end|>"
    assert "<b>" not in page and "</b>" not in page and "&lt;|im_end|&gt;" in page
    assert ">&lt;</span>" in page and ">&amp;</span>" in page and ">&quot;</span>" in page
    pos = 0
    for t in hm.tokens:  # escaped tokens appear in order in the raw page
        pos = page.index(">" + html.escape(t.text, quote=True) + "</span>", pos) + 1
    assert page.count('class="tok pen') == sum(t.penalized for t in hm.tokens)
    check_png(tmp_path / "ex.png")
    assert (tmp_path / "ex.json").exists()


def test_without_tau_there_is_no_decision(model, tokenizer, records):
    ex = tokenize_records(tokenizer, [records[3]])[0]
    hm = score_tokens(model, tokenizer, ex)
    assert all(t.penalized is None for t in hm.tokens)
    assert "no tau given" in render_html(hm)


def test_example_without_labels_is_an_error(model, tokenizer):
    with pytest.raises(UserError, match="no response"):
        score_tokens(model, tokenizer, {"input_ids": [5, 6, 7], "labels": [-100, -100, -100]})


@pytest.mark.parametrize("tau", [float("nan"), -0.1, float("inf")])
def test_meaningless_tau_is_refused(model, tokenizer, records, tau):
    with pytest.raises(UserError, match="tau must be a finite number >= 0"):
        analyze_heatmap(model, tokenizer, records[0], tau=tau)


def test_oversized_records_and_sizes_are_refused(model, tokenizer, records):
    long = {"question": "Count.", "response": "ab" * 100_000}  # 200,000 characters
    with pytest.raises(UserError, match=r"longer than the model's context \(256 positions"):
        analyze_heatmap(model, tokenizer, long, max_length=None)
    hm = analyze_heatmap(model, tokenizer, long, max_length=120, num_alternatives=0)
    assert len(hm.tokens) == 120 - hm.tokens[0].index and all(t.alternatives == [] for t in hm.tokens)
    with pytest.raises(UserError, match=r"num_alternatives must be an integer in \[0, 100\]"):
        analyze_heatmap(model, tokenizer, records[0], num_alternatives=10**6)
