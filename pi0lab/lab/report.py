"""A standalone HTML report: headings, markdown tables, Plotly figures and embedded mp4 videos."""

import base64
import html
from pathlib import Path

import plotly.graph_objects as go


def table_html(markdown: str) -> str:
    """A pipe table as `results_table` writes it (header, rule, rows) -> an HTML table."""
    lines = [line.strip().strip("|") for line in markdown.strip().splitlines()]
    header, rows = lines[0], lines[2:]
    cells = lambda line: [html.escape(c.strip()) for c in line.split("|")]
    head = "".join(f"<th>{c}</th>" for c in cells(header))
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in cells(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(path: str | Path, title: str, sections: list[tuple[str, object]]) -> Path:
    """Write `sections` [(heading, content)] to one HTML file; content is a markdown table (str),
    a Plotly figure, mp4 bytes, or a list of those. Plotly's JS is embedded once, so the file works offline."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    plotly_js_included = False
    for heading, content in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for item in content if isinstance(content, list) else [content]:
            if isinstance(item, go.Figure):
                parts.append(item.to_html(full_html=False, include_plotlyjs=not plotly_js_included))
                plotly_js_included = True
            elif isinstance(item, bytes):
                encoded = base64.b64encode(item).decode()
                parts.append(f'<video controls width="512" src="data:video/mp4;base64,{encoded}"></video>')
            elif isinstance(item, str):
                parts.append(table_html(item) if item.lstrip().startswith("|") else f"<p>{html.escape(item)}</p>")
            else:
                raise TypeError(f"cannot put a {type(item).__name__} in a report")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}td:first-child{text-align:left}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                    f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    return path
