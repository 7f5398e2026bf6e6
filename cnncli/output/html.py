"""The pieces of cnncli's HTML pages: one self-contained file, plain HTML and CSS.

Pictures are embedded as data URIs, the style sheet is inline, and there is no script and no
link to anything outside the file, so a page opens the same offline, mailed, or years later.
Every value that comes from data (a label, a path, a sentence) is escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from pathlib import Path

STYLE = """
:root { --ink: #1d2433; --soft: #5b6478; --line: #d9dee8; --paper: #f6f7fb; --accent: #d9480f; --cool: #1864ab; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       background: var(--paper); }
header { background: var(--ink); color: white; padding: 24px 32px; }
header h1 { margin: 0 0 4px; font-size: 24px; font-weight: 600; }
header p { margin: 2px 0; color: #c9d1e3; }
header .verdict { font-size: 18px; color: white; }
header .verdict b { color: #ffd8a8; }
main { max-width: 1180px; margin: 0 auto; padding: 8px 24px 48px; }
section { margin-top: 28px; }
h2 { font-size: 19px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h2 .step { display: inline-block; min-width: 28px; height: 28px; margin-right: 8px; border-radius: 14px;
           background: var(--accent); color: white; text-align: center; font-size: 15px; line-height: 28px; }
.card { background: white; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; margin: 0 auto;
        box-shadow: 0 1px 2px rgba(0, 0, 0, 0.04); }
.card h3 { margin: 0 0 4px; font-size: 16px; }
.card h3 code { font-size: 15px; }
.card .ops { color: var(--soft); font-size: 13px; margin: 0 0 8px; }
.shape { display: inline-block; padding: 1px 8px; border-radius: 10px; background: #e7f5ff; color: var(--cool);
         font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; margin-left: 6px; }
.flow { display: flex; flex-direction: column; align-items: stretch; }
.arrow { text-align: center; color: var(--soft); font-size: 22px; line-height: 28px; }
.branches { display: flex; gap: 12px; align-items: flex-start; }
.branch { flex: 1 1 0; min-width: 0; display: flex; flex-direction: column; }
.branch > .label { text-align: center; color: var(--soft); font-size: 13px; margin-bottom: 4px; }
img { max-width: 100%; height: auto; display: block; margin: 4px auto; }
.pair { display: flex; gap: 16px; flex-wrap: wrap; align-items: flex-start; }
.pair > * { flex: 1 1 420px; min-width: 0; }
table { border-collapse: collapse; font-size: 13px; background: white; margin: 8px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; }
th { background: #eef1f7; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: var(--soft); font-size: 13px; }
.figures { display: flex; gap: 24px; flex-wrap: wrap; }
.figure { background: white; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
.figure .value { font-size: 26px; font-weight: 600; }
.figure .name { color: var(--soft); font-size: 13px; }
footer { color: var(--soft); font-size: 12px; text-align: center; padding: 16px; }
"""


def text(value: object) -> str:
    """Escape any value for HTML text or an attribute."""
    return html.escape(str(value), quote=True)


def picture(path: str | Path, alt: str) -> str:
    """An <img> with the PNG at `path` embedded as a data URI."""
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{text(alt)}">'


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = ()) -> str:
    """A table of escaped cells; the columns at `numeric` are right-aligned."""
    head = "".join(f'<th class="num">{text(h)}</th>' if i in numeric else f"<th>{text(h)}</th>"
                   for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="num">{text(cell)}</td>' if i in numeric else f"<td>{text(cell)}</td>"
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(number: int | str, title: str, body: str) -> str:
    return f'<section><h2><span class="step">{text(number)}</span>{text(title)}</h2>{body}</section>'


def document(title: str, header: str, body: str) -> str:
    """A whole page: nothing in it is fetched from anywhere (default-src 'none' forbids it)."""
    policy = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{text(title)}</title><style>{STYLE}</style></head>"
            f"<body><header>{header}</header><main>{body}</main>"
            "<footer>written by cnncli; a single file with its pictures inside</footer></body></html>\n")
