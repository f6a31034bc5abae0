"""``batcher report``: one self-contained HTML file, checked as text and in a real headless
Chromium (Debian's ``chromium``; CI installs it and fails without it): the DOM holds the run's
totals and every chart, no request leaves the page, and a screenshot is taken."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from batcher._cli.main import main
from batcher._config.limits import Limits, LimitTable
from batcher._config.prices import usd
from batcher.mock import MockConfig, MockServer
from tests.helpers import read_results, run_cli, write_jsonl

pytestmark = pytest.mark.usefixtures("api_keys")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="needs chromium (apt-get install chromium); CI installs it, and fails without it",
)
CHARTS = ("jobs", "requests-0", "tokens-0", "latency", "cost", "outcomes", "waits")
SECTIONS = ("totals", "progress", "lanes", "latency", "models", "errors", "quota")


@pytest.fixture(scope="module")
def report(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path]:
    """A run with everything a report shows: ok jobs, a 400, 503 retries and a daily-quota 429
    (the mock allows 20 requests a day), priced as gemini-2.5-flash; and its report."""
    tmp = tmp_path_factory.mktemp("report")
    os.environ.setdefault("GEMINI_API_KEY", "g-test")
    with MockServer(MockConfig(limits=LimitTable(everywhere=Limits(rpd=20)))) as server:
        rows = [{"id": "flaky", "prompt": "wobbly [[flaky:2]]"}]
        rows.append({"id": "refused", "prompt": "no [[fail:400]]"})
        rows += [
            {"id": f"j{i:02d}", "prompt": f"tell me about {i} " * (i % 5 + 1)} for i in range(30)
        ]
        jobs = write_jsonl(tmp / "jobs.jsonl", rows)
        out = tmp / "run"
        flags = (
            "--model",
            "gemini-2.5-flash",
            "--max-concurrency",
            "4",
            "--on-daily-limit",
            "exit",
        )
        assert run_cli(server, "gemini", jobs, out, *flags) == 3
    target = tmp / "report.html"
    assert main(["report", str(out), "-o", str(target)]) == 0
    return out, target


def test_the_report_holds_totals_and_every_chart_and_nothing_external(
    report: tuple[Path, Path],
) -> None:
    out, path = report
    html = path.read_text()
    results = read_results(out)
    ok = sum(r["status"] == "ok" for r in results.values())
    cost = sum(r["cost_usd"] for r in results.values())
    assert _tile(html, "jobs") == "32" and _tile(html, "ok") == str(ok)
    assert _tile(html, "errors") == "1" and _tile(html, "remaining") == str(32 - len(results))
    assert _tile(html, "cost") == usd(cost) and int(_tile(html, "429s")) >= 1
    for chart in CHARTS:
        assert re.search(f'<figure class="chart" id="chart-{chart}"><svg', html), chart
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    assert "refused" in html and "HTTP 400" in html  # an example of the permanent error
    # self-contained: no attribute or style that could fetch anything, no script, no embed; URLs
    # appear only as text (an error message may quote one), never in markup
    fetching = r"""\b(src|href|srcset|action|data|poster|background)\s*=|url\(|@import"""
    assert not re.search(fetching, html, re.IGNORECASE)
    for tag in ("script", "link", "iframe", "object", "embed", "img", "image", "use"):
        assert not re.search(rf"<{tag}\b", html, re.IGNORECASE), tag
    assert "default-src 'none'" in html  # and the page forbids itself to fetch anything
    assert not re.search(r"https?://", html.split("<main>")[0])


def test_report_of_a_directory_without_a_run_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no batcher run" in capsys.readouterr().err


def _tile(html: str, key: str) -> str:
    m = re.search(rf'id="total-{key}"><span class="k">[^<]*</span><span class="v">([^<]*)<', html)
    assert m is not None, key
    return m.group(1).replace(",", "")


def _chromium(tmp: Path, url: str, *extra: str) -> tuple[str, list[dict[str, object]]]:
    """Open ``url`` in headless Chromium with every request sent to a dead proxy; return what it
    printed and the requests the page itself started (from the net log)."""
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (CI installs it: apt-get install chromium)")
    netlog = tmp / "net.json"
    args = [
        CHROMIUM,
        *("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
        *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
        f"--user-data-dir={tmp / 'profile'}",
        "--proxy-server=127.0.0.1:9",
        f"--log-net-log={netlog}",
        *extra,
        url,
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    log = json.loads(netlog.read_text())
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    # Chromium's own background requests carry no file:// isolation key; the page's do
    page = [
        e["params"]
        for e in log["events"]
        if names[e["type"]] == "URL_REQUEST_START_JOB"
        and "file://" in str(e["params"].get("network_isolation_key", ""))
        and str(e["params"].get("url", "")).startswith(("http:", "https:", "ws:", "wss:"))
    ]
    return done.stdout, page


@needs_chromium
def test_chromium_renders_the_report_offline(report: tuple[Path, Path], tmp_path: Path) -> None:
    out, path = report
    dom, requests = _chromium(tmp_path / "dom", path.as_uri(), "--dump-dom")
    assert requests == []
    results = read_results(out)
    assert re.search(r'id="total-jobs"><span class="k">jobs</span><span class="v">32<', dom)
    ok = sum(r["status"] == "ok" for r in results.values())
    assert re.search(rf'id="total-ok"><span class="k">ok</span><span class="v">{ok}<', dom)
    for chart in CHARTS:
        figure = re.search(f'<figure class="chart" id="chart-{chart}">(.*?)</figure>', dom, re.S)
        assert figure is not None, chart
        assert "<svg" in figure.group(1) and (
            "<polyline" in figure.group(1) or "<rect" in figure.group(1)
        )

    shot = tmp_path / "shot.png"
    _, requests = _chromium(
        tmp_path / "shot", path.as_uri(), f"--screenshot={shot}", "--window-size=900,2600"
    )
    assert requests == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (900, 2600)
    assert len(data) > 30_000  # charts and text, not a blank page


@needs_chromium
def test_the_network_check_sees_a_page_that_fetches(tmp_path: Path) -> None:
    page = tmp_path / "fetches.html"
    page.write_text('<!doctype html><img src="http://example.invalid/x.png">')
    _, requests = _chromium(tmp_path, page.as_uri(), "--dump-dom")
    assert [r["url"] for r in requests] == ["http://example.invalid/x.png"]


def test_a_pool_run_s_report_draws_each_endpoint_s_limit(tmp_path: Path) -> None:
    repo = Path(__file__).parents[1]
    out = tmp_path / "pool"
    pool = repo / "jobs" / "pool.toml"  # first: 600 RPM, second: 300 RPM, both mocks
    assert (
        main(
            [
                "run",
                str(repo / "jobs" / "example.jsonl"),
                "--out",
                str(out),
                "--pool",
                str(pool),
                "--no-progress",
            ]
        )
        == 0
    )
    recorded = json.loads((out / "run.json").read_text())["endpoints"]
    assert recorded["first"]["everywhere"] == {"rpm": 600}
    assert recorded["second"]["everywhere"] == {"rpm": 300}
    target = tmp_path / "report.html"
    assert main(["report", str(out), "-o", str(target)]) == 0
    html = target.read_text()
    assert "(no limits)" not in html
    lanes = re.findall(r"<h3>([^<]*) <small>\(([^)]*)\)</small></h3>", html)
    assert ("gpt-4o-mini at first", "600 RPM") in lanes, lanes
    assert any(lane.endswith("at second") and limit == "300 RPM" for lane, limit in lanes), lanes
    assert "RPM limit 600" in html and "RPM limit 300" in html


def test_a_large_run_s_report_is_bounded_and_holds_the_rows_totals(tmp_path: Path) -> None:
    """200,000 jobs written straight to Parquet: the report keeps a fixed size (its series thinned
    to 600 points) and its figures are the rows' own: totals, percentiles, the one long pause."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from batcher._cli.report_sketches import POINTS
    from tests.synthetic_run import write_run

    run = write_run(tmp_path / "big", 200_000)
    target = tmp_path / "big.html"
    assert main(["report", str(run.out), "-o", str(target)]) == 0
    html = target.read_text()
    assert len(html.encode()) < 1_000_000  # 6.7 MB when every row was drawn

    results = pq.read_table(run.out / "results")
    attempts = pq.read_table(run.out / "attempts")
    ok = pc.sum(pc.equal(results["status"], "ok")).as_py()
    assert _tile(html, "jobs") == "200000" and _tile(html, "ok") == str(ok)
    assert _tile(html, "errors") == str(200_000 - ok) and _tile(html, "remaining") == "0"
    assert _tile(html, "requests") == str(attempts.num_rows)
    limited = pc.sum(pc.equal(attempts["http_status"], 429)).as_py()
    assert _tile(html, "429s") == str(limited)
    assert _tile(html, "input-tokens") == str(pc.sum(results["input_tokens"]).as_py())
    assert _tile(html, "output-tokens") == str(pc.sum(results["output_tokens"]).as_py())
    costs = [c for c in results["cost_usd"].to_pylist() if c is not None]
    assert _tile(html, "cost") == usd(sum(costs))

    # each lane's 429 ticks are thinned, their counts are not
    assert sum(int(n.replace(",", "")) for n in re.findall(r">429 \(([\d,]+)\)<", html)) == limited
    for points in re.findall(r'<polyline class="series"[^>]* points="([^"]*)"', html):
        assert len(points.split()) <= POINTS + 1
    for chart in re.findall(r'<figure class="chart" id="chart-requests-\d+">(.*?)</figure>', html):
        assert chart.count('class="mark"') <= 2 * POINTS

    # percentiles by nearest rank, within the 0.5% of a bucket of 1% (and the display's rounding)
    answered = attempts.filter(pc.equal(attempts["outcome"], "ok"))["latency_ms"].to_numpy()
    answered.sort()
    row = re.search(r'<table class="percentiles">.*?<tbody><tr>(.*?)</tr>', html)
    assert row is not None
    cells = re.findall(r"<td>([^<]*)</td>", row.group(1))
    count, *shown = [float(c.removesuffix(" ms").replace(",", "")) for c in cells]
    assert count == len(answered)
    for q, value in zip((0.5, 0.9, 0.99), shown[:3], strict=True):
        exact = answered[int(np.ceil(q * len(answered))) - 1]
        assert abs(value - exact) <= exact * 0.005 + 0.5, (q, value, exact)
    assert shown[-1] == round(answered[-1])

    # the run's one pause of half an hour, to the second
    sent = np.sort(attempts["sent_at"].to_numpy())
    [gap] = np.flatnonzero(np.diff(sent) >= 300)
    pauses = re.search(r'<table class="gaps">.*?<tbody>(.*?)</tbody>', html)
    assert pauses is not None
    cells = re.findall(r"<td>([^<]*)</td>", pauses.group(1))
    assert cells[:2] == [_local(sent[gap]), _local(sent[gap + 1])] and len(cells) == 3


def _local(t: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")
