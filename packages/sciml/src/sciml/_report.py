"""Formatting of the CLI's results: plain-text tables for the terminal, JSON records, the HTML demo report.

The HTML report is built from the same record that is written to ``results.json``, so the two never disagree. It
is one self-contained file: the CSS is inline and the figures are embedded as base64 data URIs, so it can be
mailed, attached to a CI run or opened from anywhere.
"""

from __future__ import annotations

import base64
import html
import json
import math
import mimetypes
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = [
    "format_metric",
    "format_metrics",
    "format_seconds",
    "format_speedup",
    "json_ready",
    "render_html",
    "text_table",
    "write_demo_report",
]


def format_metric(value: object) -> str:
    """A metric value as a short string: floats to four significant digits, booleans as yes/no.

    Example:
        >>> format_metric(0.000123456), format_metric(12345.678), format_metric(3), format_metric(True)
        ('0.0001235', '1.235e+04', '3', 'yes')
        >>> format_metric(float("nan")), format_metric("cg")
        ('nan', 'cg')
    """
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_metrics(metrics: Mapping[str, object], *, limit: int | None = None, width: int | None = None) -> str:
    """Metrics as ``name=value`` pairs joined by commas, the first ``limit`` of them, cut at ``width`` characters.

    Example:
        >>> format_metrics({"residual": 1.5e-9, "iterations": 42, "converged": True})
        'residual=1.5e-09, iterations=42, converged=yes'
        >>> format_metrics({"a": 1, "b": 2, "c": 3}, limit=2)
        'a=1, b=2, ...'
    """
    items = list(metrics.items())
    shown = items if limit is None else items[:limit]
    text = ", ".join(f"{name}={format_metric(value)}" for name, value in shown)
    if len(shown) < len(items):
        text += ", ..."
    if width is not None and len(text) > width:
        text = text[: max(width - 3, 0)] + "..."
    return text


def format_seconds(seconds: float | None) -> str:
    """A duration with a unit that keeps three significant digits readable.

    Example:
        >>> format_seconds(2.5e-6), format_seconds(0.0123), format_seconds(1.5), format_seconds(754.0)
        ('2.50 µs', '12.3 ms', '1.50 s', '754 s')
        >>> format_seconds(None)
        '-'
    """
    if seconds is None or not math.isfinite(seconds):
        return "-"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if abs(seconds) >= scale:
            return _three_digits(seconds / scale, unit)
    return _three_digits(seconds / 1e-9, "ns")


def _three_digits(value: float, unit: str) -> str:
    if value >= 100:
        return f"{value:.0f} {unit}"
    if value >= 10:
        return f"{value:.1f} {unit}"
    return f"{value:.2f} {unit}"


def format_speedup(speedup: float | None) -> str:
    """Peer time over our time, as ``x.xx`` and the multiplication sign; ``-`` without a peer.

    Example:
        >>> format_speedup(2.0), format_speedup(0.456), format_speedup(None)
        ('2.00×', '0.46×', '-')
    """  # noqa: RUF002 (the multiplication sign is meant)
    if speedup is None or not math.isfinite(speedup):
        return "-"
    return f"{speedup:.2f}\u00d7"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> str:
    """A plain-text table with a rule under the header; columns listed in ``right`` are right-aligned.

    Example:
        >>> print(text_table(["case", "time"], [["cg", "1.2 ms"], ["cholesky", "15 ms"]], right=[1]))
        case      time
        --------  ------
        cg        1.2 ms
        cholesky   15 ms
    """
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def json_ready(value: Any) -> Any:
    """``value`` with what strict JSON cannot hold replaced: non-finite floats become strings, tuples lists.

    Tensor and NumPy scalars (anything with ``.item()``) become Python numbers, paths become strings.

    Example:
        >>> json_ready({"a": float("inf"), "b": (1, float("nan")), "c": {"d": 0.5}})
        {'a': 'inf', 'b': [1, 'nan'], 'c': {'d': 0.5}}
    """
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    item = getattr(value, "item", None)
    if callable(item):
        return json_ready(item())
    return str(value)


def write_demo_report(record: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``results.json`` and ``index.html`` for a ``sciml demo`` record into ``out_dir``.

    Args:
        record: the run's record (see ``sciml._cli``); figure paths in it are relative to ``out_dir``.
        out_dir: the folder holding the figures; the two files are written there.

    Returns:
        The paths of ``results.json`` and ``index.html``.
    """
    clean = json_ready(record)
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(clean, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    html_path = out_dir / "index.html"
    html_path.write_text(render_html(clean, out_dir), encoding="utf-8")
    return json_path, html_path


# --------------------------------------------------------------------------------------------------------- HTML


_METRICS_BESIDE_SUMMARY = 8


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _anchor(*parts: str) -> str:
    return "demo-" + re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


def _badge(status: str) -> str:
    label = {"passed": "passed", "failed": "failed", "error": "error"}.get(status, status)
    return f'<span class="badge badge-{_e(status)}">{_e(label)}</span>'


def _paragraphs(text: str) -> str:
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    return "".join(f"<p>{_e(' '.join(b.split()))}</p>" for b in blocks)


def _data_uri(path: Path) -> str | None:
    try:
        payload = path.read_bytes()
    except OSError:
        return None
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def _readable_date(timestamp: str) -> str:
    try:
        when = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    zone = when.tzname() or ""
    return f"{when:%Y-%m-%d %H:%M} {'UTC' if zone in ('UTC', 'UTC+00:00') else zone}".strip()


def _breakable(text: str) -> str:
    # Long dotted names (scipy.sparse.linalg.spsolve) may wrap after a dot rather than mid-word.
    return re.sub(r"(?<=[A-Za-z_])\.(?=[A-Za-z_])", ".<wbr>", _e(text))


def _metrics_list(metrics: Mapping[str, Any]) -> str:
    if not metrics:
        return ""
    rows = "".join(
        f'<div class="metric"><dt>{_e(name)}</dt><dd>{_breakable(format_metric(value))}</dd></div>'
        for name, value in metrics.items()
    )
    return f'<div class="metrics"><h3>Metrics</h3><dl class="metric-list">{rows}</dl></div>'


def _figures(figures: Sequence[str], out_dir: Path) -> str:
    items: list[str] = []
    for figure in figures:
        path = Path(figure)
        uri = _data_uri(path if path.is_absolute() else out_dir / path)
        caption = _e(path.name)
        if uri is None:
            items.append(
                f'<figure class="missing"><div>figure not found</div><figcaption>{caption}</figcaption></figure>'
            )
        else:
            items.append(f'<figure><img src="{uri}" alt="{caption}"><figcaption>{caption}</figcaption></figure>')
    return f'<div class="figures">{"".join(items)}</div>' if items else ""


def _demo_section(demo: Mapping[str, Any], out_dir: Path) -> str:
    package, name = str(demo.get("package", "")), str(demo.get("name", ""))
    status = str(demo.get("status", "passed" if demo.get("passed") else "failed"))
    parts = [
        f'<section class="card demo" id="{_anchor(package, name)}">',
        '<div class="demo-head">',
        f"<h2>{_e(demo.get('title') or name)}</h2>",
        _badge(status),
        "</div>",
        '<p class="demo-sub">',
        f"<code>{_e(package)}</code><span class=sep>/</span><code>{_e(name)}</code>",
        f'<span class="dot">·</span>{_e(format_seconds(demo.get("seconds")))}',
        "</p>",
    ]
    summary = _paragraphs(str(demo.get("summary") or ""))
    metric_values: Mapping[str, Any] = demo.get("metrics") or {}
    metrics = _metrics_list(metric_values)
    if summary or metrics:
        # A short metrics list sits beside the summary; a long one goes below it, in columns.
        layout = "demo-body stacked" if len(metric_values) > _METRICS_BESIDE_SUMMARY else "demo-body"
        parts.append(f'<div class="{layout}"><div class="summary">{summary}</div>{metrics}</div>')
    parts.append(_figures(demo.get("figures") or [], out_dir))
    warnings = demo.get("warnings") or []
    if warnings:
        listed = "".join(f"<li>{_e(w)}</li>" for w in warnings)
        parts.append(f'<div class="warnings"><strong>Warnings</strong><ul>{listed}</ul></div>')
    if demo.get("error"):
        parts.append(f'<details class="error" open><summary>Error</summary><pre>{_e(demo["error"])}</pre></details>')
    parts.append("</section>")
    return "\n".join(parts)


def _overview_key(demo: Mapping[str, Any]) -> str:
    error = demo.get("error")
    if error:
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        return f'<td class="key error-line">{_e(lines[-1][:120] if lines else "error")}</td>'
    return f'<td class="key">{_e(format_metrics(demo.get("metrics") or {}, limit=3, width=80))}</td>'


def _overview(demos: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for demo in demos:
        package, name = str(demo.get("package", "")), str(demo.get("name", ""))
        status = str(demo.get("status", "passed" if demo.get("passed") else "failed"))
        rows.append(
            "<tr>"
            f'<td><a href="#{_anchor(package, name)}">{_e(demo.get("title") or name)}</a></td>'
            f"<td><code>{_e(package)}</code></td>"
            f"<td>{_badge(status)}</td>"
            f"{_overview_key(demo)}"
            f'<td class="num">{_e(format_seconds(demo.get("seconds")))}</td>'
            "</tr>"
        )
    return (
        '<section class="card overview"><h2>Overview</h2><div class="scroll"><table class="overview-table">'
        "<thead><tr><th>Demo</th><th>Package</th><th>Result</th><th>Key metrics</th>"
        '<th class="num">Time</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def _versions_table(versions: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th scope='row'>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in versions.items())
    return f'<table class="versions"><tbody>{rows}</tbody></table>'


_CSS = """
:root {
  --bg: #f4f5f7; --card: #ffffff; --text: #1d2330; --muted: #5d6678; --border: #e2e5eb; --accent: #3b5bdb;
  --pass-bg: #e6f4ea; --pass-fg: #1e6b35; --fail-bg: #fde8e8; --fail-fg: #a61b1b; --code-bg: #f1f3f6;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--bg); color: var(--text);
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
}
main { max-width: 1120px; margin: 0 auto; padding: 32px 24px 48px; }
header.page { display: flex; flex-wrap: wrap; align-items: flex-end; justify-content: space-between; gap: 16px;
  margin-bottom: 24px; }
header.page h1 { margin: 0; font-size: 28px; letter-spacing: -0.01em; }
header.page h1 span { color: var(--muted); font-weight: 400; }
.meta { margin: 6px 0 0; color: var(--muted); display: flex; flex-wrap: wrap; gap: 6px 18px; font-size: 14px; }
.meta b { color: var(--text); font-weight: 600; }
.card { background: var(--card); border: 1px solid var(--border); border-radius: 12px; padding: 22px 26px;
  margin: 0 0 20px; box-shadow: 0 1px 2px rgba(16, 24, 40, 0.04), 0 1px 8px rgba(16, 24, 40, 0.04); }
.card h2 { margin: 0; font-size: 20px; line-height: 1.3; }
.overview h2 { margin-bottom: 12px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
.overview-table { width: 100%; }
.overview-table th, .overview-table td { text-align: left; padding: 8px 12px; border-bottom: 1px solid var(--border);
  vertical-align: middle; }
.overview-table thead th { font-size: 12px; text-transform: uppercase; letter-spacing: 0.04em; color: var(--muted);
  font-weight: 600; }
.overview-table tbody tr:last-child td { border-bottom: 0; }
.overview-table td.key { color: var(--muted); font-size: 13px; }
.overview-table td.key.error-line { color: var(--fail-fg); }
.overview-table code { white-space: nowrap; }
th.num, td.num { text-align: right !important; white-space: nowrap; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.88em;
  background: var(--code-bg); padding: 1px 6px; border-radius: 4px; }
.badge { display: inline-block; border-radius: 999px; padding: 2px 10px; font-size: 12px; font-weight: 600;
  letter-spacing: 0.02em; text-transform: uppercase; white-space: nowrap; }
.badge.overall { font-size: 14px; padding: 6px 16px; }
.badge-passed { background: var(--pass-bg); color: var(--pass-fg); }
.badge-failed, .badge-error { background: var(--fail-bg); color: var(--fail-fg); }
.demo-head { display: flex; align-items: center; justify-content: space-between; gap: 12px; }
.demo-sub { margin: 6px 0 14px; color: var(--muted); font-size: 14px; }
.demo-sub .sep { margin: 0 4px; }
.demo-sub .dot { margin: 0 8px; }
.demo-body { display: grid; grid-template-columns: minmax(0, 1fr) minmax(260px, auto); gap: 28px;
  align-items: start; }
.demo-body.stacked { grid-template-columns: minmax(0, 1fr); gap: 8px; }
.summary p { margin: 0 0 10px; max-width: 75ch; }
.metrics h3 { margin: 0 0 6px; font-size: 12px; text-transform: uppercase; letter-spacing: 0.04em;
  color: var(--muted); font-weight: 600; }
.metric-list { margin: 0; font-size: 14px; }
.stacked .metric-list { columns: 3 250px; column-gap: 32px; }
.metric { display: flex; justify-content: space-between; align-items: baseline; gap: 18px; padding: 5px 2px;
  border-bottom: 1px solid var(--border); break-inside: avoid; }
.metric dt { flex: 0 0 auto; max-width: 65%; color: var(--muted); overflow-wrap: break-word; }
.metric dd { margin: 0; min-width: 0; text-align: right; font-variant-numeric: tabular-nums; overflow-wrap: break-word;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
/* Figures keep their natural size (capped at the card's width) and sit side by side when they fit. */
.figures { display: flex; flex-wrap: wrap; justify-content: center; align-items: flex-start; gap: 18px;
  margin-top: 18px; }
figure { margin: 0; flex: 0 1 auto; max-width: 100%; border: 1px solid var(--border); border-radius: 8px;
  padding: 10px; background: #fff; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { margin-top: 6px; font-size: 12px; color: var(--muted); text-align: center; }
figure.missing div { padding: 40px; text-align: center; color: var(--fail-fg); }
.warnings { margin-top: 16px; padding: 10px 14px; border-radius: 8px; background: #fff8e6; color: #7a5b00;
  font-size: 14px; }
.warnings ul { margin: 4px 0 0; padding-left: 20px; }
details.error { margin-top: 16px; border: 1px solid #f3c4c4; border-radius: 8px; background: #fff7f7; }
details.error summary { cursor: pointer; padding: 8px 14px; color: var(--fail-fg); font-weight: 600; }
details.error pre { margin: 0; padding: 0 14px 14px; overflow-x: auto; font-size: 12.5px; line-height: 1.45; }
footer { color: var(--muted); font-size: 13px; margin-top: 28px; }
footer h2 { font-size: 13px; text-transform: uppercase; letter-spacing: 0.04em; margin: 0 0 8px; }
table.versions th, table.versions td { padding: 3px 16px 3px 0; text-align: left; }
table.versions th { font-weight: 500; color: var(--text); }
.empty { color: var(--muted); }
@media (max-width: 760px) {
  .demo-body { grid-template-columns: 1fr; }
  main { padding: 20px 12px; }
}
@media (prefers-color-scheme: dark) {
  :root { --bg: #14171c; --card: #1c2027; --text: #e4e7ec; --muted: #98a1b2; --border: #2c323c;
    --accent: #8ea6ff; --pass-bg: #17351f; --pass-fg: #8fd9a4; --fail-bg: #3d1a1a; --fail-fg: #ff9d9d;
    --code-bg: #262b34; }
  details.error { background: #2a1c1c; border-color: #5a2c2c; }
  .warnings { background: #2d2614; color: #f0d58a; }
}
@media print { body { background: #fff; } .card { box-shadow: none; break-inside: avoid; } }
"""


def render_html(record: Mapping[str, Any], out_dir: Path) -> str:
    """The self-contained HTML report of a ``sciml demo`` record; figures are read from ``out_dir`` and embedded.

    Example:
        >>> record = {"sciml_version": "0.1.0", "device": "cpu", "created": "2025-01-01T12:00:00+00:00",
        ...           "demos": [{"package": "sciml-x", "name": "d", "title": "A demo", "summary": "Hi.",
        ...                      "metrics": {"error": 1e-9}, "figures": [], "passed": True, "status": "passed",
        ...                      "seconds": 0.5}]}
        >>> page = render_html(record, Path("."))
        >>> "A demo" in page and "1e-09" in page and "2025-01-01 12:00 UTC" in page
        True
    """
    demos: list[Mapping[str, Any]] = list(record.get("demos") or [])
    n_passed = sum(1 for d in demos if d.get("passed"))
    all_passed = bool(demos) and n_passed == len(demos)
    device = str(record.get("device", ""))
    device_label = f"{device} · {record['device_name']}" if record.get("device_name") else device
    meta = [
        f"<span>sciml <b>{_e(record.get('sciml_version', '?'))}</b></span>",
        f"<span>device <b>{_e(device_label)}</b></span>",
        f"<span>{_e(_readable_date(str(record.get('created', ''))))}</span>",
    ]
    if record.get("quick"):
        meta.append("<span>quick mode</span>")
    overall = f"{n_passed} / {len(demos)} passed"
    header = (
        '<header class="page"><div>'
        "<h1>sciml <span>demo report</span></h1>"
        f'<div class="meta">{"".join(meta)}</div>'
        "</div>"
        f'<span class="badge overall badge-{"passed" if all_passed else "failed"}">{_e(overall)}</span>'
        "</header>"
    )
    if demos:
        body = _overview(demos) + "\n" + "\n".join(_demo_section(d, out_dir) for d in demos)
    else:
        body = '<section class="card"><p class="empty">No demos were found or selected.</p></section>'
    command = record.get("command")
    footer = "<footer>"
    if command:
        footer += f"<p>Generated by <code>{_e(command)}</code>.</p>"
    footer += f"<h2>Versions</h2>{_versions_table(record.get('versions') or {})}</footer>"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="color-scheme" content="light dark">\n'
        f"<title>sciml demo report · {_e(overall)}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n<main>\n{header}\n{body}\n{footer}\n</main>\n</body>\n</html>\n"
    )
