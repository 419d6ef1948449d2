from __future__ import annotations

import math
from pathlib import Path

import pytest
from sciml._report import format_seconds, format_speedup, json_ready, render_html, text_table


def _record(**demo: object) -> dict[str, object]:
    base = {
        "package": "sciml-x",
        "name": "d",
        "title": "T",
        "summary": "S",
        "metrics": {},
        "figures": [],
        "passed": True,
        "status": "passed",
        "seconds": 0.1,
        "error": None,
        "warnings": [],
    }
    base.update(demo)
    return {"sciml_version": "0.1.0", "device": "cpu", "created": "2025-01-01T00:00:00+00:00", "demos": [base]}


def test_html_escapes_text() -> None:
    page = render_html(_record(title="<script>alert(1)</script>", metrics={"a<b": "x&y"}), Path("."))
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a&lt;b" in page
    assert "x&amp;y" in page


def test_html_reports_missing_figure_and_error(tmp_path: Path) -> None:
    page = render_html(
        _record(figures=["gone.png"], passed=False, status="error", error="Traceback...\nValueError: boom"),
        tmp_path,
    )
    assert "figure not found" in page
    assert "gone.png" in page
    assert "ValueError: boom" in page
    assert "0 / 1 passed" in page


def test_html_without_demos() -> None:
    page = render_html({"demos": []}, Path("."))
    assert "No demos were found" in page


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0.00 ns"), (3e-9, "3.00 ns"), (1e-6, "1.00 µs"), (0.999, "999 ms"), (61.0, "61.0 s"), (math.nan, "-")],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_format_speedup_and_json_ready() -> None:
    assert format_speedup(float("inf")) == "-"
    assert json_ready({"p": Path("a/b"), 1: {True, False} and [float("-inf")]}) == {"p": "a/b", "1": ["-inf"]}


def test_text_table_rows_line_up() -> None:
    table = text_table(["a", "long header"], [["xxxxxx", "1"], ["y", "22"]], right=[1])
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[2].endswith(" 1")
    assert lines[3].endswith("22")
