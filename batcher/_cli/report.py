"""``batcher report``: one self-contained HTML file telling a run's story.

The figures come from ``report_data`` (the run directory read once and summed); this module draws
them as HTML, with charts as inline SVG (``_cli.svg``) and the style inline: no scripts, fonts or
images to fetch, so it opens offline in any browser and prints to PDF as it shows (a print
stylesheet keeps each chart on one page). Sections: totals; jobs done over time; requests and input
tokens per minute against each lane's limits, with 429s and retries marked; latency percentiles
and a histogram; tokens and cost per model; errors by kind with examples; quota days and waits.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from pathlib import Path
from urllib.parse import urlsplit

from .._config.prices import usd
from .._progress import duration
from .exits import EXIT_OK
from .report_data import RunData, read_run
from .report_sketches import POINTS
from .svg import PALETTE, Marks, Series, bar_chart, hbar_chart, line_chart

__all__ = ["render_report", "report_command", "write_report"]


def _local(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(chart_id: str, svg: str, caption: str) -> str:
    return (
        f'<figure class="chart" id="chart-{chart_id}">{svg}'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{escape(title)}</h2>{body}</section>'


class _Report:
    """Draws the report's sections from one run's data, its times as minutes since ``t0``."""

    def __init__(self, data: RunData) -> None:
        self.data = data
        self.t0, self.t1 = data.t0, data.t1

    def minutes(self, t: float) -> float:
        return (t - self.t0) / 60

    # --- sections ------------------------------------------------------------------------------

    def totals(self) -> str:
        t = self.data.totals
        cells = [
            ("jobs", f"{t.jobs:,}"),
            ("ok", f"{t.ok:,}"),
            ("errors", f"{t.errors:,}"),
            ("remaining", f"{t.remaining:,}"),
            ("requests", f"{t.requests:,}"),
            ("429s", f"{t.rate_limited:,}"),
            ("input tokens", f"{t.input_tokens:,}"),
            ("output tokens", f"{t.output_tokens:,}"),
            ("cost", usd(t.cost) if t.cost is not None else "unknown"),
            ("span", duration(self.t1 - self.t0) if self.t1 > self.t0 else "-"),
        ]
        tiles = "".join(
            f'<div class="tile" id="total-{k.replace(" ", "-")}"><span class="k">{escape(k)}'
            f'</span><span class="v">{escape(v)}</span></div>'
            for k, v in cells
        )
        m = self.data.manifest
        where = escape(urlsplit(m.base_url).netloc or m.base_url)  # a host, not a link
        return (
            f'<section id="totals"><h2>Totals</h2><div class="tiles">{tiles}</div>'
            f"<p>Provider {escape(m.provider)} at {where}; default model "
            f"{escape(m.model or '-')}; from {_local(self.t0) if self.t0 else '-'} to "
            f"{_local(self.t1) if self.t1 else '-'}.</p></section>"
        )

    def progress(self) -> str:
        done = self.data.finishes.cumulative()
        points = [(0.0, 0.0)] + [(self.minutes(t), n) for t, n in done]
        svg = line_chart(
            "Jobs done over time",
            [Series("jobs done", points)],
            x_label="minutes since the first request",
            y_label="jobs done",
            limit=self.data.manifest.total,
            limit_label="jobs in the inputs",
        )
        caption = (
            "Finished jobs (ok or error) as they were written, against the jobs the inputs hold."
        )
        if self.data.finishes.thinned:
            caption += f" Counted at {POINTS} moments across the run."
        return _section("progress", "Jobs done over time", _figure("jobs", svg, caption))

    def lanes(self) -> str:
        parts = []
        for i, load in enumerate(self.data.lanes):
            xs = [self.minutes(t) for t in load.centres]
            scale = 60 / load.width
            limited, retries = load.rate_limited, load.retries
            marks = [
                Marks("429", [self.minutes(t) for t in limited.times()], count=limited.count),
                Marks(
                    "retries",
                    [self.minutes(t) for t in retries.times()],
                    color="#ff7f0e",
                    row=1,
                    count=retries.count,
                ),
            ]
            r_svg = line_chart(
                f"Requests per minute, {load.name}",
                [
                    Series(
                        "requests/min",
                        [(x, n * scale) for x, n in zip(xs, load.requests, strict=True)],
                    )
                ],
                x_label="minutes since the first request",
                y_label="requests per minute",
                limit=load.limits.rpm,
                limit_label="RPM limit",
                marks=marks,
            )
            t_svg = line_chart(
                f"Input tokens per minute, {load.name}",
                [
                    Series(
                        "input tokens/min",
                        [(x, n * scale) for x, n in zip(xs, load.tokens, strict=True)],
                        color=PALETTE[2],
                    )
                ],
                x_label="minutes since the first request",
                y_label="input tokens per minute",
                limit=load.limits.tpm,
                limit_label="TPM limit",
            )
            limit_text = load.limits.describe()
            parts.append(f"<h3>{escape(load.name)} <small>({escape(limit_text)})</small></h3>")
            caption = (
                f"Requests sent per minute (buckets of {load.width:.0f} s) against the RPM "
                "limit; ticks below mark 429 answers (red) and retries (orange)."
            )
            parts.append(_figure(f"requests-{i}", r_svg, caption))
            caption = "Input tokens reported per minute against the TPM limit."
            parts.append(_figure(f"tokens-{i}", t_svg, caption))
        if not parts:
            parts.append("<p>No attempts were logged in this directory.</p>")
        return _section("lanes", "Pace against the limits", "".join(parts))

    def latency(self) -> str:
        values = self.data.latencies
        if not values.count:
            return _section("latency", "Latency", "<p>No answers yet.</p>")
        qs = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)]
        table = _table(
            ["answers", *(q for q, _ in qs)],
            [[f"{values.count:,}", *(f"{values.percentile(p):,.0f} ms" for _, p in qs)]],
            "percentiles",
        )
        svg = bar_chart(
            "Latency of answered requests",
            values.bins(),
            x_label="milliseconds",
            y_label="requests",
        )
        caption = (
            "Time from sending a request to its answer (successful requests); the last bar "
            "holds everything above the 99th percentile."
        )
        return _section("latency", "Latency", table + _figure("latency", svg, caption))

    def models(self) -> str:
        usage = self.data.models
        table = _table(
            ["model", "jobs", "input tokens", "output tokens", "cost"],
            [
                [
                    u.model,
                    f"{u.jobs:,}",
                    f"{u.input_tokens:,}",
                    f"{u.output_tokens:,}",
                    usd(u.cost) if u.cost is not None else "no price",
                ]
                for u in usage
            ],
            "models",
        )
        priced = [(u.model, u.cost) for u in usage if u.cost is not None]
        bars: list[tuple[str, float, str]]
        if priced:
            bars = [(m, cost, usd(cost)) for m, cost in priced]
            title, caption = "Cost per model", "Dollars per model, at the prices of prices.toml."
        else:
            tokens = [(u.model, u.input_tokens + u.output_tokens) for u in usage]
            bars = [(m, t, f"{t:,}") for m, t in tokens]
            title, caption = "Tokens per model", "Input and output tokens per model (no prices)."
        figure = _figure("cost", hbar_chart(title, bars), caption)
        return _section("models", "Tokens and cost per model", table + figure)

    def errors(self) -> str:
        counts = self.data.outcomes
        figure = _figure(
            "outcomes",
            hbar_chart("Requests by outcome", [(k, v, f"{v:,}") for k, v in counts]),
            "Every request sent, by how it ended: ok, or the kind of error and HTTP status.",
        )
        parts = [figure]
        kinds = self.data.errors
        if not kinds:
            parts.append('<p id="no-errors">No job ended in error.</p>')
        for kind in kinds:
            parts.append(f'<h3 class="error-kind">{escape(kind.kind)}: {kind.count:,} jobs</h3>')
            parts.append(
                _table(
                    ["job", "model", "error"],
                    [[r["id"], r["model"] or "-", (r["error"] or "")[:300]] for r in kind.examples],
                    "examples",
                )
            )
        return _section("errors", "Errors", "".join(parts))

    def quota(self) -> str:
        table = _table(
            ["quota day (Pacific)", "model", "requests", "ok", "429s", "RPD"],
            [
                [
                    q.day,
                    q.model,
                    f"{q.requests:,}",
                    f"{q.ok:,}",
                    f"{q.rate_limited:,}",
                    f"{q.rpd:,}" if q.rpd else "-",
                ]
                for q in self.data.quota_days
            ],
            "quota-days",
        )
        waited = [(self.minutes(t), w) for t, w in self.data.waits.pairs()]
        svg = line_chart(
            "Wait for the lane before each request",
            [Series("seconds waited", waited, color=PALETTE[3])],
            x_label="minutes since the first request",
            y_label="seconds",
        )
        caption = (
            "How long each request waited for its lane (pacing, a 429's pause) before it was sent."
        )
        if self.data.waits.thinned:
            caption += f" The longest wait in each of {POINTS} stretches of the run."
        figure = _figure("waits", svg, caption)
        text = (
            f"<p>Requests waited {duration(self.data.total_wait)} in all for their lanes; the "
            f"longest wait was {duration(self.data.longest_wait)}.</p>"
        )
        gaps = [[_local(b), _local(a), duration(a - b)] for b, a in self.data.gaps]
        if gaps:
            text += "<h3>Pauses of five minutes or more</h3>" + _table(
                ["from", "to", "for"], gaps, "gaps"
            )
        return _section("quota", "Quota days and waits", table + figure + text)

    def html(self) -> str:
        sections = [
            self.totals(),
            self.progress(),
            self.lanes(),
            self.latency(),
            self.models(),
            self.errors(),
            self.quota(),
        ]
        title = f"batcher run {self.data.out.name}"
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "style-src 'unsafe-inline'\">"
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{escape(title)}</h1><p>{escape(str(self.data.out))} · report written "
            f"{_local(datetime.now().timestamp())}</p></header><main>{''.join(sections)}</main>"
            "</body></html>\n"
        )


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;
margin:0 auto;max-width:780px;padding:16px}
h1{font-size:22px;margin:0}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;
margin-top:28px}h3{font-size:15px;margin:16px 0 4px}h3 small{font-weight:normal;color:#666}
header p{color:#666;margin:2px 0 0}
.tiles{display:grid;grid-template-columns:repeat(5,1fr);gap:8px}
.tile{border:1px solid #ddd;border-radius:6px;padding:6px 8px}
.tile .k{display:block;color:#666;font-size:12px}.tile .v{font-size:17px;font-weight:600}
figure{margin:8px 0 16px}figcaption{color:#555;font-size:12px}
svg.chart{max-width:100%;height:auto;font-size:11px;fill:#333}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{border-bottom:1px solid #eee;padding:3px 10px 3px 0;text-align:left;vertical-align:top}
td{font-variant-numeric:tabular-nums}
@media print{body{max-width:none;padding:0;font-size:11pt}
section,figure,table{break-inside:avoid}h2{break-after:avoid}
.tile{border-color:#999}}
"""


def render_report(data: RunData) -> str:
    """The report of ``data`` as one HTML document."""
    return _Report(data).html()


def write_report(out: Path, target: Path | None = None) -> Path:
    """Write the report of the run in ``out`` to ``target`` (default ``out/report.html``)."""
    from .._core.errors import WriteFailed

    html = render_report(read_run(out))
    path = target or out / "report.html"
    try:
        path.write_text(html, encoding="utf-8")
    except OSError as e:
        raise WriteFailed.from_os_error(e, path) from e
    return path


def report_command(args: argparse.Namespace) -> int:
    """Write the report of the run in ``args.dir`` and print where it is."""
    path = write_report(Path(args.dir), Path(args.output) if args.output else None)
    print(f"report: {path}")
    return EXIT_OK
