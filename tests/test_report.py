"""report.md / report.html: files written, values present, HTML well-formed and self-contained."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest

from recforge.report import Bars, Curve, Table, Text, roc_pr_curves, write_report

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}


class StrictParser(HTMLParser):
    """Checks that every opened tag is closed in order; collects text and tag names."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(
                f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'} at {self.getpos()}"
            )
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def example_sections():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    scores = {
        "lr": (y, np.clip(0.35 * y + 0.65 * rng.random(300), 0, 1)),
        "deepfm": (y, rng.random(300)),
    }
    recall = Table(
        "Recall stage (full ranking)",
        ["recall@10", "ndcg@10", "n_users", "fit_seconds"],
        {
            "most_popular": {
                "recall@10": 0.1234,
                "ndcg@10": 0.0812,
                "n_users": 943,
                "fit_seconds": 0.02,
            },
            "itemcf": {"recall@10": 0.2345, "ndcg@10": 0.1591, "n_users": 943, "fit_seconds": 1.5},
        },
    )
    rank = Table(
        "Ranking stage",
        ["auc", "logloss"],
        {
            "lr": {"auc": 0.7012, "logloss": 0.5501},
            "deepfm <b>": {"auc": 0.6501, "logloss": 0.6021},
        },
    )
    bars = Bars(
        "Recall@K per recall model",
        {
            "most_popular": {"recall@10": 0.1234, "recall@20": 0.2},
            "itemcf": {"recall@10": 0.2345, "recall@20": 0.31},
        },
        y_label="recall",
    )
    text = Text("Notes", "Leave-last-out split.\n\nScores & <tags> are escaped.")
    return [text, recall, rank, *roc_pr_curves(scores), bars]


def test_write_report_files_values_and_wellformed_html(tmp_path):
    meta = {"dataset": "ml-100k", "n_interactions": 100_000, "split": "leave-last-out"}
    md_path, html_path = write_report(
        tmp_path / "run", title="ml-100k run", sections=example_sections(), meta=meta
    )
    assert md_path == tmp_path / "run" / "report.md" and html_path.exists()
    md, doc = md_path.read_text(), html_path.read_text()

    for s in (md, doc):
        for value in (
            "0.2345",
            "0.1591",
            "0.7012",
            "0.5501",
            "943",
            "ml-100k",
            "leave-last-out",
            "100,000",
        ):
            assert value in s, value
    # best values bold: higher recall, lower logloss and time; counts not compared
    assert "**0.2345**" in md and "**0.5501**" in md and "**0.0200**" in md and "**943**" not in md
    assert "**0.1234**" not in md and "**0.6021**" not in md
    assert md.count("](figures/") == 3
    assert len(list((tmp_path / "run" / "figures").glob("*.svg"))) == 3

    p = StrictParser()
    p.feed(doc)
    p.close()
    assert not p.errors, p.errors
    assert p.stack == [], f"unclosed tags: {p.stack}"
    assert (
        p.tags.count("svg") == 3 and "polyline" in p.tags and "rect" in p.tags and "style" in p.tags
    )
    # self-contained: no external resource
    assert not [v for k, v in p.attrs if k in ("src", "href") and v and not v.startswith("#")]
    assert "<script" not in doc
    text = " ".join(p.text)
    assert "deepfm <b>" in text and "Scores & <tags> are escaped." in text  # escaped, then decoded
    assert "AUC" in text and "AP " in text  # legends of the ROC / PR curves
    # each SVG written beside the markdown parses on its own
    for f in (tmp_path / "run" / "figures").glob("*.svg"):
        q = StrictParser()
        q.feed(f.read_text())
        assert not q.errors and not q.stack


def test_report_edge_cases(tmp_path):
    sections = [
        Table("single row, missing cell", ["a", "b"], {"m": {"a": float("nan")}}),
        Curve(
            "free axes", {"loss": ([1, 2, 3], [5.0, 3.0, 2.5])}, "epoch", "loss", unit_square=False
        ),
        Bars("one bar", {"m": {"": 0.0}}),
    ]
    md_path, html_path = write_report(tmp_path, title="edge", sections=sections)
    assert "| m | – | – |" in md_path.read_text()
    p = StrictParser()
    p.feed(html_path.read_text())
    assert not p.errors and not p.stack
    with pytest.raises(TypeError, match="section 0"):
        write_report(tmp_path, title="bad", sections=["not a section"])  # type: ignore[list-item]
