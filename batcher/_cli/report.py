"""``batcher report``: one self-contained HTML file telling a run's story.

It reads the run directory (``run.json``, the results and the attempt log) and writes HTML with
its charts as inline SVG (``_cli.svg``) and its style inline: no scripts, fonts or images to fetch,
so it opens offline in any browser and prints to PDF as it shows (a print stylesheet keeps each
chart on one page). Sections: totals; jobs done over time; requests and input tokens per minute
against each lane's limits, with 429s and retries marked; latency percentiles and a histogram;
tokens and cost per model; errors by kind with examples; quota days and waits.
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._config.prices import usd
from .._core.clock import QUOTA_TZ
from .._core.errors import UsageError
from .._progress import duration
from .._rundir.manifest import Manifest
from .._rundir.results import iter_rows
from .exits import EXIT_OK
from .svg import PALETTE, Marks, Series, bar_chart, hbar_chart, line_chart

__all__ = ["RunData", "read_run", "render_report", "report_command", "write_report"]

RESULT_COLUMNS = [
    "id",
    "status",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
    "finished_at",
    "error_kind",
    "error",
]
ATTEMPT_COLUMNS = [
    "job_id",
    "attempt",
    "model",
    "endpoint",
    "sent_at",
    "waited_ms",
    "latency_ms",
    "outcome",
    "http_status",
    "input_tokens",
    "output_tokens",
    "retry_after",
    "error",
    "host",
]
EXAMPLES = 3
"""Examples shown per error kind."""
LONG_GAP = 300.0
"""Seconds without a request sent that the report lists as a wait (a quota reset, an outage)."""


@dataclass(frozen=True, slots=True)
class RunData:
    """What a report is drawn from."""

    out: Path
    manifest: Manifest
    results: list[dict[str, Any]]
    attempts: list[dict[str, Any]]


def read_run(out: Path) -> RunData:
    """Read ``out``'s manifest, results and attempt log (beside a live run, moving nothing)."""
    manifest = Manifest.read(out)
    if manifest is None:
        raise UsageError(f"{out} holds no batcher run (no run.json)")
    results = list(iter_rows(out, RESULT_COLUMNS))
    attempts = sorted(
        iter_rows(out, ATTEMPT_COLUMNS, stream="attempts"), key=lambda a: a["sent_at"] or 0.0
    )
    return RunData(out, manifest, results, attempts)


def _percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted ``values``, by nearest rank."""
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


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


class _Report:
    """Builds the report's sections from one run's data."""

    def __init__(self, data: RunData) -> None:
        self.data = data
        times = [a["sent_at"] for a in data.attempts if a["sent_at"]]
        times += [r["finished_at"] for r in data.results if r["finished_at"]]
        self.t0 = min(times, default=0.0)
        self.t1 = max(times, default=0.0)
        self.charts: list[str] = []

    def minutes(self, t: float) -> float:
        return (t - self.t0) / 60

    # --- sections ------------------------------------------------------------------------------

    def totals(self) -> str:
        d = self.data
        ok = sum(1 for r in d.results if r["status"] == "ok")
        errors = len(d.results) - ok
        costs = [r["cost_usd"] for r in d.results if r["cost_usd"] is not None]
        cells = [
            ("jobs", f"{d.manifest.total:,}"),
            ("ok", f"{ok:,}"),
            ("errors", f"{errors:,}"),
            ("remaining", f"{max(0, d.manifest.total - len(d.results)):,}"),
            ("requests", f"{len(d.attempts):,}"),
            ("429s", f"{sum(1 for a in d.attempts if a['http_status'] == 429):,}"),
            ("input tokens", f"{sum(r['input_tokens'] or 0 for r in d.results):,}"),
            ("output tokens", f"{sum(r['output_tokens'] or 0 for r in d.results):,}"),
            ("cost", usd(sum(costs)) if costs else "unknown"),
            ("span", duration(self.t1 - self.t0) if self.t1 > self.t0 else "-"),
        ]
        tiles = "".join(
            f'<div class="tile" id="total-{k.replace(" ", "-")}"><span class="k">{escape(k)}'
            f'</span><span class="v">{escape(v)}</span></div>'
            for k, v in cells
        )
        m = d.manifest
        where = escape(urlsplit(m.base_url).netloc or m.base_url)  # a host, not a link
        return (
            f'<section id="totals"><h2>Totals</h2><div class="tiles">{tiles}</div>'
            f"<p>Provider {escape(m.provider)} at {where}; default model "
            f"{escape(m.model or '-')}; from {_local(self.t0) if self.t0 else '-'} to "
            f"{_local(self.t1) if self.t1 else '-'}.</p></section>"
        )

    def progress(self) -> str:
        done = sorted(r["finished_at"] for r in self.data.results if r["finished_at"])
        points = [(0.0, 0.0)] + [(self.minutes(t), i + 1) for i, t in enumerate(done)]
        svg = line_chart(
            "Jobs done over time",
            [Series("jobs done", points)],
            x_label="minutes since the first request",
            y_label="jobs done",
            limit=self.data.manifest.total,
            limit_label="jobs in the inputs",
        )
        return self._section(
            "progress",
            "Jobs done over time",
            _figure(
                "jobs",
                svg,
                (
                    "Finished jobs (ok or error) as they were written, against the jobs the "
                    "inputs hold."
                ),
            ),
        )

    def lanes(self) -> str:
        # one lane per endpoint and model (one endpoint, "default", outside a pool)
        by_model: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for a in self.data.attempts:
            by_model[(a["endpoint"] or "default", a["model"])].append(a)
        span = max(self.t1 - self.t0, 1.0)
        width = max(1.0, span / 48)  # seconds per bucket: about 48 points across the run
        parts = []
        for i, ((endpoint, model), attempts) in enumerate(sorted(by_model.items())):
            # run.json holds the run's own limits, and each of a pool's endpoints' (a run.json
            # written before it kept them has none for them)
            manifest = self.data.manifest
            limits = manifest.limits_for(model, None if endpoint == "default" else endpoint)
            lane = model if endpoint == "default" else f"{model} at {endpoint}"
            buckets = math.floor(span / width) + 1
            reqs, toks = [0] * buckets, [0] * buckets
            for a in attempts:
                b = min(buckets - 1, int((a["sent_at"] - self.t0) / width))
                reqs[b] += 1
                toks[b] += a["input_tokens"] or 0
            xs = [self.minutes(self.t0 + (b + 0.5) * width) for b in range(buckets)]
            scale = 60 / width
            marks = [
                Marks(
                    "429", [self.minutes(a["sent_at"]) for a in attempts if a["http_status"] == 429]
                ),
                Marks(
                    "retries",
                    [self.minutes(a["sent_at"]) for a in attempts if (a["attempt"] or 1) > 1],
                    color="#ff7f0e",
                    row=1,
                ),
            ]
            slug = f"{i}"
            r_svg = line_chart(
                f"Requests per minute, {lane}",
                [Series("requests/min", [(x, n * scale) for x, n in zip(xs, reqs, strict=True)])],
                x_label="minutes since the first request",
                y_label="requests per minute",
                limit=limits.rpm,
                limit_label="RPM limit",
                marks=marks,
            )
            t_svg = line_chart(
                f"Input tokens per minute, {lane}",
                [
                    Series(
                        "input tokens/min",
                        [(x, n * scale) for x, n in zip(xs, toks, strict=True)],
                        color=PALETTE[2],
                    )
                ],
                x_label="minutes since the first request",
                y_label="input tokens per minute",
                limit=limits.tpm,
                limit_label="TPM limit",
            )
            limit_text = limits.describe()
            parts.append(f"<h3>{escape(lane)} <small>({escape(limit_text)})</small></h3>")
            parts.append(
                _figure(
                    f"requests-{slug}",
                    r_svg,
                    (
                        f"Requests sent per minute (buckets of {width:.0f} s) against the RPM "
                        "limit; ticks below mark 429 answers (red) and retries (orange)."
                    ),
                )
            )
            parts.append(
                _figure(
                    f"tokens-{slug}",
                    t_svg,
                    ("Input tokens reported per minute against the TPM limit."),
                )
            )
        if not parts:
            parts.append("<p>No attempts were logged in this directory.</p>")
        return self._section("lanes", "Pace against the limits", "".join(parts))

    def latency(self) -> str:
        values = sorted(a["latency_ms"] for a in self.data.attempts if a["outcome"] == "ok")
        if not values:
            values = sorted(r["latency_ms"] for r in self.data.results if r["latency_ms"])
        if not values:
            return self._section("latency", "Latency", "<p>No answers yet.</p>")
        qs = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)]
        table = _table(
            ["answers", *(q for q, _ in qs)],
            [[f"{len(values):,}", *(f"{_percentile(values, p):,.0f} ms" for _, p in qs)]],
            "percentiles",
        )
        top = _percentile(values, 0.99) or 1.0
        n = 24
        step = top / n
        counts = [0] * n
        for v in values:
            counts[min(n - 1, int(v / step))] += 1  # the last bin holds everything above p99
        bins = [(i * step, (i + 1) * step, c) for i, c in enumerate(counts)]
        svg = bar_chart(
            "Latency of answered requests", bins, x_label="milliseconds", y_label="requests"
        )
        figure = _figure(
            "latency",
            svg,
            (
                "Time from sending a request to its answer (successful requests); the last bar "
                "holds everything above the 99th percentile."
            ),
        )
        return self._section("latency", "Latency", table + figure)

    def models(self) -> str:
        rows: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0.0, 0])
        priced: set[str] = set()
        for r in self.data.results:
            row = rows[r["model"] or "?"]
            row[0] += 1
            row[1] += r["input_tokens"] or 0
            row[2] += r["output_tokens"] or 0
            if r["cost_usd"] is not None:
                row[3] += r["cost_usd"]
                priced.add(r["model"] or "?")
        table = _table(
            ["model", "jobs", "input tokens", "output tokens", "cost"],
            [
                [
                    m,
                    f"{v[0]:,}",
                    f"{int(v[1]):,}",
                    f"{int(v[2]):,}",
                    usd(v[3]) if m in priced else "no price",
                ]
                for m, v in sorted(rows.items())
            ],
            "models",
        )
        if priced:
            bars = [(m, rows[m][3], usd(rows[m][3])) for m in sorted(priced)]
            title, caption = "Cost per model", "Dollars per model, at the prices of prices.toml."
        else:
            bars = [(m, v[1] + v[2], f"{int(v[1] + v[2]):,}") for m, v in sorted(rows.items())]
            title, caption = "Tokens per model", "Input and output tokens per model (no prices)."
        figure = _figure("cost", hbar_chart(title, bars), caption)
        return self._section("models", "Tokens and cost per model", table + figure)

    def errors(self) -> str:
        kinds: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in self.data.results:
            if r["status"] == "error":
                kinds[r["error_kind"] or "unknown"].append(r)
        outcomes = Counter(
            f"{a['outcome']} ({a['http_status'] if a['http_status'] is not None else 'no answer'})"
            for a in self.data.attempts
        )
        figure = _figure(
            "outcomes",
            hbar_chart(
                "Requests by outcome", [(k, v, f"{v:,}") for k, v in outcomes.most_common()]
            ),
            "Every request sent, by how it ended: ok, or the kind of error and HTTP status.",
        )
        parts = [figure]
        if not kinds:
            parts.append('<p id="no-errors">No job ended in error.</p>')
        for kind, rows in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
            parts.append(f'<h3 class="error-kind">{escape(kind)}: {len(rows):,} jobs</h3>')
            parts.append(
                _table(
                    ["job", "model", "error"],
                    [
                        [r["id"], r["model"] or "-", (r["error"] or "")[:300]]
                        for r in rows[:EXAMPLES]
                    ],
                    "examples",
                )
            )
        return self._section("errors", "Errors", "".join(parts))

    def quota(self) -> str:
        days: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        for a in self.data.attempts:
            day = datetime.fromtimestamp(a["sent_at"], QUOTA_TZ).strftime("%Y-%m-%d")
            row = days[(day, a["model"])]
            row[0] += 1
            row[1] += a["outcome"] == "ok"
            row[2] += a["http_status"] == 429
        manifest = self.data.manifest
        table = _table(
            ["quota day (Pacific)", "model", "requests", "ok", "429s", "RPD"],
            [
                [
                    day,
                    model,
                    f"{v[0]:,}",
                    f"{v[1]:,}",
                    f"{v[2]:,}",
                    f"{manifest.limits_for(model).rpd:,}"
                    if manifest.limits_for(model).rpd
                    else "-",
                ]
                for (day, model), v in sorted(days.items())
            ],
            "quota-days",
        )
        waits = [
            (self.minutes(a["sent_at"]), (a["waited_ms"] or 0) / 1000) for a in self.data.attempts
        ]
        svg = line_chart(
            "Wait for the lane before each request",
            [Series("seconds waited", waits, color=PALETTE[3])],
            x_label="minutes since the first request",
            y_label="seconds",
        )
        figure = _figure(
            "waits",
            svg,
            (
                "How long each request waited for its lane (pacing, a 429's pause) before it "
                "was sent."
            ),
        )
        gaps = []
        sent = [a["sent_at"] for a in self.data.attempts]
        for before, after in itertools.pairwise(sent):
            if after - before >= LONG_GAP:
                gaps.append([_local(before), _local(after), duration(after - before)])
        total_wait = sum(w for _, w in waits)
        text = (
            f"<p>Requests waited {duration(total_wait)} in all for their lanes; the longest "
            f"wait was {duration(max((w for _, w in waits), default=0.0))}.</p>"
        )
        if gaps:
            text += "<h3>Pauses of five minutes or more</h3>" + _table(
                ["from", "to", "for"], gaps, "gaps"
            )
        return self._section("quota", "Quota days and waits", table + figure + text)

    def _section(self, sid: str, title: str, body: str) -> str:
        return f'<section id="{sid}"><h2>{escape(title)}</h2>{body}</section>'

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
