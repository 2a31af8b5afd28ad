"""Run reports a person can read: ``report.md`` and a self-contained ``report.html``.

    write_report(run_dir, title="ml-100k", meta={"dataset": "ml-100k", "split": "leave-last-out"},
                 sections=[Table("Recall", columns, rows), *roc_pr_curves(scores), Bars(...)])

Sections are small dataclasses: ``Text``, ``Table`` (models as rows, metrics as columns,
the best value of each column in bold), ``Curve`` (line charts: ROC, PR) and ``Bars``
(grouped bar charts, e.g. Recall@K per recall model). Charts are hand-written SVG: inlined
in the HTML (no external file, script or font) and written beside the Markdown under
``figures/``. No plotting dependency. ``report.json`` beside them holds the sections as
data, which ``compare(run_dirs, out)`` (``recforge report compare``) merges: the same
section of several runs side by side, their curves overlaid. ``recforge.report_parts``
builds the sections a run shows from library objects.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "Bars",
    "Curve",
    "Table",
    "Text",
    "compare",
    "read_report",
    "roc_pr_curves",
    "training_curves",
    "write_report",
]

PALETTE = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
]
_LOWER_IS_BETTER = re.compile(r"(loss|time|seconds|latency|rmse|mae|_s$|^s$|error)", re.IGNORECASE)


@dataclass
class Text:
    """A titled block of text; blank lines separate paragraphs."""

    title: str
    body: str


@dataclass
class Table:
    """A metrics table: ``rows`` maps a row name (model) to {column: value}.

    Numeric columns get their best value in bold: lower is better for columns listed in
    ``lower_is_better`` or whose name says loss/time/seconds/latency/error; columns whose
    name starts with "n_" (counts) are not compared.
    """

    title: str
    columns: Sequence[str]
    rows: Mapping[str, Mapping[str, Any]]
    lower_is_better: Sequence[str] = ()
    row_header: str = "model"
    digits: int = 4
    bold_best: bool = True


@dataclass
class Curve:
    """A line chart: ``series`` maps a name to (x, y) arrays of equal length."""

    title: str
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]]
    x_label: str = "x"
    y_label: str = "y"
    diagonal: bool = False  # draw y = x (the chance line of a ROC curve)
    unit_square: bool = True  # axes fixed to [0, 1]; otherwise fitted to the data


@dataclass
class Bars:
    """A grouped bar chart: ``values`` maps a group (model) to {series (e.g. "recall@10"): value}."""

    title: str
    values: Mapping[str, Mapping[str, float]]
    y_label: str = ""
    digits: int = 3


Section = Text | Table | Curve | Bars


def roc_pr_curves(scores: Mapping[str, tuple[Any, Any]]) -> list[Curve]:
    """ROC and PR curves of several rankers: scores maps name -> (y_true, y_prob)."""
    from recforge import metrics as M

    roc: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    pr: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (y, p) in scores.items():
        fpr, tpr, _ = M.roc_curve(y, p)
        prec, rec, _ = M.pr_curve(y, p)
        roc[f"{name} (AUC {M.auc(y, p):.3f})"] = (fpr, tpr)
        pr[f"{name} (AP {M.average_precision(y, p):.3f})"] = (rec[::-1], prec[::-1])
    return [
        Curve("ROC curve", roc, "false positive rate", "true positive rate", diagonal=True),
        Curve("Precision-recall curve", pr, "recall", "precision"),
    ]


def training_curves(histories: Mapping[str, Any]) -> list[Curve]:
    """Training loss, each validation metric and the learning rate per epoch, one line per model:
    ``histories`` maps a name to a model's ``train_history_`` (a ``History``, or the dict
    saved with the model); models without one are left out."""
    loss: dict[str, tuple[list[float], list[float]]] = {}
    lr: dict[str, tuple[list[float], list[float]]] = {}
    valid: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for name, hist in histories.items():
        if hist is None:
            continue
        h = hist if isinstance(hist, Mapping) else hist.to_dict()
        if h.get("train_loss"):
            loss[name] = (list(range(1, len(h["train_loss"]) + 1)), list(h["train_loss"]))
        if h.get("lr"):
            lr[name] = (list(range(1, len(h["lr"]) + 1)), [float(v) for v in h["lr"]])
        for epoch, metrics in enumerate(h.get("valid") or [], 1):
            for metric, value in metrics.items():
                xs, ys = valid.setdefault(metric, {}).setdefault(name, ([], []))
                xs.append(epoch)
                ys.append(float(value))
    curves = []
    if loss:
        curves.append(Curve("Training loss", loss, "epoch", "mean loss", unit_square=False))
    for metric, series in valid.items():
        curves.append(Curve(f"Validation {metric}", series, "epoch", metric, unit_square=False))
    if lr:
        curves.append(
            Curve("Learning rate (end of epoch)", lr, "epoch", "learning rate", unit_square=False)
        )
    return curves


# ---------------------------------------------------------------------- formatting


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, int | np.integer):
        return f"{int(v):,}"
    if isinstance(v, float | np.floating):
        v = float(v)
        if math.isnan(v):
            return "–"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** (-digits)):
            return f"{v:.{digits - 1}e}"
        if abs(v) >= 100:
            return f"{v:,.1f}"
        return f"{v:.{digits}f}"
    return str(v)


def _is_num(v: Any) -> bool:
    return (
        isinstance(v, int | float | np.integer | np.floating)
        and not isinstance(v, bool)
        and np.isfinite(v)
    )


def _best_rows(table: Table) -> dict[str, set[str]]:
    """column -> names of the rows holding its best value."""
    out: dict[str, set[str]] = {}
    if not table.bold_best or len(table.rows) < 2:
        return out
    for col in table.columns:
        if col.startswith("n_"):
            continue
        vals = {r: float(v[col]) for r, v in table.rows.items() if col in v and _is_num(v[col])}
        if len(vals) < 2:
            continue
        lower = col in table.lower_is_better or bool(_LOWER_IS_BETTER.search(col))
        best = min(vals.values()) if lower else max(vals.values())
        out[col] = {r for r, v in vals.items() if v == best}
    return out


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") or "figure"


# ---------------------------------------------------------------------- SVG charts

_W, _H = 560, 360
_ML, _MR, _MT, _MB = 60, 20, 30, 50  # margins: left, right, top, bottom


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], start
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _downsample(
    x: np.ndarray, y: np.ndarray, max_points: int = 400
) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= max_points:
        return x, y
    keep = np.unique(np.r_[np.linspace(0, len(x) - 1, max_points).astype(int), len(x) - 1])
    return x[keep], y[keep]


def _svg_open(title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" '
        f'role="img" aria-label="{html.escape(title)}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
        f'<rect x="0" y="0" width="{_W}" height="{_H}" fill="white"/>',
    ]


def _axes(
    parts: list[str], xt: list[tuple[float, str]], yt: list[tuple[float, str]], xl: str, yl: str
) -> None:
    x0, x1, y0, y1 = _ML, _W - _MR, _H - _MB, _MT
    for py, label in yt:
        parts.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" stroke="#e5e5e5"/>')
        parts.append(
            f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end" fill="#444">{html.escape(label)}</text>'
        )
    for px, label in xt:
        parts.append(f'<line x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y0 + 4}" stroke="#444"/>')
        parts.append(
            f'<text x="{px:.1f}" y="{y0 + 17}" text-anchor="middle" fill="#444">{html.escape(label)}</text>'
        )
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#444"/>')
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#444"/>')
    parts.append(
        f'<text x="{(x0 + x1) / 2:.1f}" y="{_H - 10}" text-anchor="middle" fill="#222">{html.escape(xl)}</text>'
    )
    cy = (y0 + y1) / 2
    parts.append(
        f'<text x="16" y="{cy:.1f}" text-anchor="middle" fill="#222" '
        f'transform="rotate(-90 16 {cy:.1f})">{html.escape(yl)}</text>'
    )


def _legend(parts: list[str], names: list[str], x: float, y: float) -> None:
    width = max((len(n) for n in names), default=0) * 6.6 + 34
    parts.append(
        f'<rect x="{x - 6:.1f}" y="{y - 12:.1f}" width="{width:.1f}" height="{18 * len(names) + 6}" '
        f'fill="white" fill-opacity="0.85" stroke="#ccc"/>'
    )
    for j, name in enumerate(names):
        c = PALETTE[j % len(PALETTE)]
        yy = y + 18 * j
        parts.append(f'<rect x="{x:.1f}" y="{yy - 8:.1f}" width="14" height="10" fill="{c}"/>')
        parts.append(
            f'<text x="{x + 20:.1f}" y="{yy + 1:.1f}" fill="#222">{html.escape(name)}</text>'
        )


def svg_curve(curve: Curve) -> str:
    """An SVG line chart of ``curve``."""
    series = {
        n: (np.asarray(x, np.float64), np.asarray(y, np.float64))
        for n, (x, y) in curve.series.items()
    }
    if curve.unit_square:
        xlo, xhi, ylo, yhi = 0.0, 1.0, 0.0, 1.0
    else:
        xs = np.concatenate([x for x, _ in series.values()] or [np.zeros(1)])
        ys = np.concatenate([y for _, y in series.values()] or [np.zeros(1)])
        xlo, xhi = float(np.nanmin(xs)), float(np.nanmax(xs))
        ylo, yhi = min(0.0, float(np.nanmin(ys))), float(np.nanmax(ys)) * 1.05 or 1.0
    pw, ph = _W - _ML - _MR, _H - _MT - _MB

    def px(v: float) -> float:
        return _ML + (v - xlo) / ((xhi - xlo) or 1.0) * pw

    def py(v: float) -> float:
        return _H - _MB - (v - ylo) / ((yhi - ylo) or 1.0) * ph

    parts = _svg_open(curve.title)
    _axes(
        parts,
        [(px(t), _fmt_tick(t)) for t in _nice_ticks(xlo, xhi)],
        [(py(t), _fmt_tick(t)) for t in _nice_ticks(ylo, yhi)],
        curve.x_label,
        curve.y_label,
    )
    if curve.diagonal:
        parts.append(
            f'<line x1="{px(0):.1f}" y1="{py(0):.1f}" x2="{px(1):.1f}" y2="{py(1):.1f}" '
            f'stroke="#999" stroke-dasharray="4 4"/>'
        )
    for j, (name, (x, y)) in enumerate(series.items()):
        x, y = _downsample(x, y)
        pts = " ".join(
            f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x, y) if np.isfinite(a) and np.isfinite(b)
        )
        parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{PALETTE[j % len(PALETTE)]}" stroke-width="2">'
            f"<title>{html.escape(name)}</title></polyline>"
        )
    # the legend sits bottom-right for ROC-like curves (upper-left is where they live)
    names = list(series)
    lx = _W - _MR - (max((len(n) for n in names), default=0) * 6.6 + 40)
    ly = _H - _MB - 18 * len(names) - 4 if curve.diagonal or curve.unit_square else _MT + 14
    if curve.unit_square and not curve.diagonal:  # PR-like: the lower left is empty
        lx = _ML + 14
    _legend(parts, names, lx, ly)
    parts.append("</svg>")
    return "\n".join(parts)


def _fmt_tick(t: float) -> str:
    return f"{t:g}"


def svg_bars(bars: Bars) -> str:
    """An SVG grouped bar chart of ``bars``."""
    groups = list(bars.values)
    series = list(dict.fromkeys(s for g in groups for s in bars.values[g]))
    vals = [float(v) for g in groups for v in bars.values[g].values() if _is_num(v)]
    top = max(vals, default=1.0) * 1.15 or 1.0
    pw, ph = _W - _ML - _MR, _H - _MT - _MB
    gw = pw / max(len(groups), 1)
    bw = min(40.0, gw * 0.8 / max(len(series), 1))

    def py(v: float) -> float:
        return _H - _MB - v / top * ph

    parts = _svg_open(bars.title)
    _axes(parts, [], [(py(t), _fmt_tick(t)) for t in _nice_ticks(0.0, top)], "", bars.y_label)
    for gi, g in enumerate(groups):
        cx = _ML + gw * (gi + 0.5)
        x_start = cx - bw * len(series) / 2
        for si, s in enumerate(series):
            v = bars.values[g].get(s)
            if not _is_num(v):
                continue
            x = x_start + si * bw
            y = py(float(v))
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{_H - _MB - y:.1f}" '
                f'fill="{PALETTE[si % len(PALETTE)]}"><title>{html.escape(f"{g} {s}: {_fmt(v, bars.digits)}")}</title></rect>'
            )
            parts.append(
                f'<text x="{x + (bw - 2) / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle" font-size="10" '
                f'fill="#222">{_fmt(float(v), bars.digits)}</text>'
            )
        parts.append(
            f'<text x="{cx:.1f}" y="{_H - _MB + 17}" text-anchor="middle" fill="#222">{html.escape(str(g))}</text>'
        )
    x = float(_ML)
    for si, s in enumerate(series):  # one-line legend in the top margin, clear of the bars
        parts.append(
            f'<rect x="{x:.1f}" y="8" width="14" height="10" fill="{PALETTE[si % len(PALETTE)]}"/>'
        )
        parts.append(f'<text x="{x + 20:.1f}" y="17" fill="#222">{html.escape(s)}</text>')
        x += 34 + 6.6 * len(s)
    parts.append("</svg>")
    return "\n".join(parts)


# ---------------------------------------------------------------------- writers

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1.5em; line-height: 1.45; }
h1 { border-bottom: 2px solid #1f77b4; padding-bottom: .3em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 5px 10px; }
th { background: #f3f6fa; text-align: center; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; background: #eaf4ea; }
tr:nth-child(even) td { background-color: #fafafa; }
tr:nth-child(even) td.best { background: #e2efe2; }
table.meta th { text-align: left; background: none; border: none; padding: 2px 16px 2px 0; color: #555; }
table.meta td { border: none; padding: 2px 0; background: none !important; }
figure { margin: 1em 0; }
svg { max-width: 100%; height: auto; border: 1px solid #eee; }
p.note { color: #666; font-size: 13px; }
"""


def _md_table(t: Table) -> str:
    best = _best_rows(t)
    head = "| " + " | ".join([t.row_header, *t.columns]) + " |"
    sep = "|" + "|".join(["---", *["---:"] * len(t.columns)]) + "|"
    lines = [head, sep]
    for r, vals in t.rows.items():
        cells = []
        for c in t.columns:
            s = _fmt(vals.get(c), t.digits)
            cells.append(f"**{s}**" if r in best.get(c, ()) else s)
        lines.append("| " + " | ".join([str(r), *cells]) + " |")
    return "\n".join(lines)


def _html_table(t: Table) -> str:
    best = _best_rows(t)
    e = html.escape
    out = [
        "<table>",
        "<thead><tr>"
        + "".join(f"<th>{e(str(c))}</th>" for c in [t.row_header, *t.columns])
        + "</tr></thead>",
        "<tbody>",
    ]
    for r, vals in t.rows.items():
        cells = [f"<th>{e(str(r))}</th>"]
        for c in t.columns:
            v = vals.get(c)
            cls = ["num"] if _is_num(v) else []
            if r in best.get(c, ()):
                cls.append("best")
            cells.append(f'<td class="{" ".join(cls)}">{e(_fmt(v, t.digits))}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def write_report(
    run_dir: str | Path,
    *,
    title: str,
    sections: Sequence[Section],
    meta: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``report.md`` (charts as ``figures/*.svg`` beside it) and a self-contained
    ``report.html`` into ``run_dir`` (created if missing).

    meta: run metadata shown under the title (dataset, sizes, split, ...); "date" is added
    when absent. Returns (markdown path, html path).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {"date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"), **dict(meta or {})}
    e = html.escape
    md = [f"# {title}", ""]
    md += [f"- **{k}**: {_fmt(v)}" for k, v in meta.items()]
    doc = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{e(title)}</h1>",
        '<table class="meta">',
        *[f"<tr><th>{e(str(k))}</th><td>{e(_fmt(v))}</td></tr>" for k, v in meta.items()],
        "</table>",
    ]
    fig_dir = run_dir / "figures"
    used: set[str] = set()
    for n, sec in enumerate(sections):
        if not isinstance(sec, Text | Table | Curve | Bars):
            raise TypeError(
                f"write_report: section {n} is a {type(sec).__name__}; use Text, Table, Curve or Bars."
            )
        md += ["", f"## {sec.title}", ""]
        doc += ["<section>", f"<h2>{e(sec.title)}</h2>"]
        if isinstance(sec, Text):
            md.append(sec.body.strip())
            doc += [
                f"<p>{e(p.strip())}</p>"
                for p in re.split(r"\n\s*\n", sec.body.strip())
                if p.strip()
            ]
        elif isinstance(sec, Table):
            md.append(_md_table(sec))
            doc.append(_html_table(sec))
            if _best_rows(sec):
                doc.append('<p class="note">Best value per column in bold.</p>')
        else:
            svg = svg_curve(sec) if isinstance(sec, Curve) else svg_bars(sec)
            name = _slug(sec.title)
            if name in used:
                name = f"{name}-{n}"
            used.add(name)
            fig_dir.mkdir(exist_ok=True)
            (fig_dir / f"{name}.svg").write_text(svg)
            md.append(f"![{sec.title}](figures/{name}.svg)")
            doc.append(f"<figure>{svg}</figure>")
        doc.append("</section>")
    doc += ["</body>", "</html>"]
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    html_path.write_text("\n".join(doc) + "\n", encoding="utf-8")
    data = {"title": title, "meta": meta, "sections": [_section_to_json(s) for s in sections]}
    (run_dir / REPORT_JSON).write_text(json.dumps(data, default=_json_default), encoding="utf-8")
    log.info("report written to %s and %s", md_path, html_path)
    return md_path, html_path


# ---------------------------------------------------------------------- comparing runs

REPORT_JSON = "report.json"  # the report's sections as data, for ``compare``
_KINDS: dict[str, type] = {"text": Text, "table": Table, "curve": Curve, "bars": Bars}


def _json_default(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return str(x)


def _section_to_json(sec: Section) -> dict[str, Any]:
    kind = next(k for k, cls in _KINDS.items() if isinstance(sec, cls))
    d = dict(sec.__dict__)
    if isinstance(sec, Curve):
        d["series"] = {
            n: [list(map(float, x)), list(map(float, y))] for n, (x, y) in sec.series.items()
        }
    return {"kind": kind, **d}


def read_report(run_dir: str | Path) -> dict[str, Any]:
    """A run's report as data: {"title", "meta", "sections": [Text/Table/Curve/Bars]}."""
    path = Path(run_dir) / REPORT_JSON
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: a run written by recforge train/evaluate/quickstart or bundle "
            f"build holds one; re-run it with this version to compare it."
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    sections = []
    for d in data["sections"]:
        cls = _KINDS[d.pop("kind")]
        if cls is Curve:
            d["series"] = {n: (x, y) for n, (x, y) in d["series"].items()}
        sections.append(cls(**d))
    return {"title": data["title"], "meta": data.get("meta", {}), "sections": sections}


def compare(run_dirs: Sequence[str | Path], out_dir: str | Path) -> tuple[Path, Path]:
    """One report with several runs side by side: sections of the same title are merged
    (curves overlaid, table rows and bar groups prefixed by the run's name, texts one
    paragraph per run). Returns the (markdown, html) paths written to ``out_dir``."""
    if len(run_dirs) < 2:
        raise ValueError("compare: give at least two run directories.")
    names: list[str] = []
    for d in run_dirs:
        name = Path(d).resolve().name or str(d)
        while name in names:
            name += "'"
        names.append(name)
    reports = [read_report(d) for d in run_dirs]
    merged: dict[tuple[str, str], list[tuple[str, Section]]] = {}
    for name, rep in zip(names, reports):
        for sec in rep["sections"]:
            merged.setdefault((type(sec).__name__, sec.title), []).append((name, sec))
    runs = Table(
        "Runs",
        ["title", "date", "wall time", "data hash", "split"],
        {
            n: {
                "title": r["title"],
                **{k: r["meta"].get(k) for k in ("date", "wall time", "data hash")},
                "split": r["meta"].get("split"),
            }
            for n, r in zip(names, reports)
        },
        row_header="run",
        bold_best=False,
    )
    sections: list[Section] = [runs]
    for (_, title), parts in merged.items():
        first = parts[0][1]
        if isinstance(first, Curve):
            series = {}
            for run, sec in parts:
                for s, xy in sec.series.items():  # type: ignore[union-attr]
                    series[run if len(sec.series) == 1 else f"{run}: {s}"] = xy  # type: ignore[union-attr]
            sections.append(dataclasses.replace(first, series=series))
        elif isinstance(first, Table):
            rows, cols = {}, list(first.columns)
            for run, sec in parts:
                cols += [c for c in sec.columns if c not in cols]  # type: ignore[union-attr]
                for r, v in sec.rows.items():  # type: ignore[union-attr]
                    rows[run if len(sec.rows) == 1 else f"{run} / {r}"] = v  # type: ignore[union-attr]
            sections.append(dataclasses.replace(first, columns=cols, rows=rows))
        elif isinstance(first, Bars):
            values = {
                f"{run} / {g}": v
                for run, sec in parts
                for g, v in sec.values.items()  # type: ignore[union-attr]
            }
            sections.append(dataclasses.replace(first, values=values))
        else:
            body = "\n\n".join(f"{run}: {sec.body.strip()}" for run, sec in parts)  # type: ignore[union-attr]
            sections.append(Text(title, body))
    return write_report(
        out_dir,
        title="recforge report compare: " + ", ".join(names),
        sections=sections,
        meta={"runs": ", ".join(str(d) for d in run_dirs)},
    )
