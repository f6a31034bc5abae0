"""Prices as data, the cost of each result row, and ``--budget`` (stop, then continue)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batcher._cli.main import main
from batcher._config.prices import Price, Prices, load_prices, usd
from batcher._engine.budget import Budget
from batcher.mock import MockServer
from tests.helpers import mock_stats, read_results, run_cli, write_jsonl

pytestmark = pytest.mark.usefixtures("api_keys")

# Round numbers, so each expected cost is worked out by hand below.
PRICES = """
[test]
date = "2026-11-28"
source = "tests"
batch = 0.5
models."m" = { input = 1000.0, output = 2000.0 }
models."cheap" = { input = 1.0, output = 1.0 }
"""


@pytest.fixture
def prices_file(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    return path


def test_packaged_prices_are_dated_and_sourced() -> None:
    prices = load_prices()
    assert set(prices.sources) == {"gemini", "openai"}
    for day, source in prices.sources.values():
        assert day[:2] == "20" and source.startswith("https://")
    flash = prices.price("gemini-2.5-flash")
    assert flash is not None and (flash.input, flash.output, flash.batch) == (0.30, 2.50, 0.5)


# The packaged figures as checked on 2026-12-07 (the sources are named in prices.toml's header):
# (input, output, cached_input) per million tokens; every one of these has a batch share of 0.5.
CHECKED = {
    "gemini-2.5-pro": (1.25, 10.00, 0.125),
    "gemini-2.5-flash": (0.30, 2.50, 0.03),
    "gemini-2.5-flash-lite": (0.10, 0.40, 0.01),
    "gpt-4o": (2.50, 10.00, 1.25),
    "gpt-4o-mini": (0.15, 0.60, 0.075),
    "gpt-4.1": (2.00, 8.00, 0.50),
    "gpt-4.1-mini": (0.40, 1.60, 0.10),
    "gpt-4.1-nano": (0.10, 0.40, 0.025),
    "gpt-5": (1.25, 10.00, 0.125),
    "gpt-5-mini": (0.25, 2.00, 0.025),
    "o3": (2.00, 8.00, 0.50),
    "o4-mini": (1.10, 4.40, 0.275),
}


@pytest.mark.parametrize(("model", "figures"), sorted(CHECKED.items()))
def test_packaged_prices_are_the_checked_ones(model: str, figures: tuple[float, ...]) -> None:
    price = load_prices().price(model)
    assert price is not None
    assert (price.input, price.output, price.cached_input, price.batch) == (*figures, 0.5)


def test_costs_against_hand_computed_figures() -> None:
    pro = Price(input=1.25, output=10.0, batch=0.5)
    # 1,000 input at $1.25/M = $0.00125; 500 output at $10/M = $0.005
    assert pro.cost(1000, 500) == pytest.approx(0.00625)
    assert pro.cost(1000, 500, batch=True) == pytest.approx(0.003125)
    # 400 of 1,000 input tokens cached at $1.25/M, the other 600 at $2.50/M: $0.0015 + $0.0005
    cached = Price(input=2.5, output=10.0, cached_input=1.25)
    assert cached.cost(1000, 0, cached_tokens=400) == pytest.approx(0.002)
    # no cached price: cached tokens are charged as input; thinking as output unless priced
    assert Price(2.0, 8.0).cost(1000, 0, cached_tokens=400) == pytest.approx(0.002)
    assert Price(2.0, 8.0, thinking=3.5).cost(0, 100, thinking_tokens=200) == pytest.approx(
        0.0008 + 0.0007
    )


def test_a_versioned_model_name_takes_its_family_price() -> None:
    prices = Prices({"gpt-4o": Price(2.5, 10), "gpt-4o-mini": Price(0.15, 0.6)}, {})
    assert prices.price("gpt-4o-mini-2024-07-18") == Price(0.15, 0.6)
    assert prices.price("gpt-4o-2024-08-06") == Price(2.5, 10)
    assert prices.price("models/gpt-4o") == Price(2.5, 10)
    assert prices.price("gpt-4") is None and prices.cost("gpt-4", 10, 10) is None


@given(st.integers(0, 10**7), st.integers(0, 10**7), st.integers(0, 10**7))
def test_cost_is_linear_and_batch_halves_it(tin: int, tout: int, cached: int) -> None:
    price = Price(input=0.3, output=2.5, cached_input=0.075, batch=0.5)
    full = price.cost(tin, tout, cached_tokens=cached)
    assert full >= 0
    assert price.cost(tin, tout, cached_tokens=cached, batch=True) == pytest.approx(full / 2)
    assert full <= price.cost(tin, tout) + 1e-12  # a cache only makes input cheaper


def test_usd_reads_well() -> None:
    assert [usd(x) for x in (0, 1234.5, 0.25, 0.000012, 0.0001325)] == [
        "$0.00",
        "$1,234.50",
        "$0.25",
        "$0.000012",
        "$0.0001325",
    ]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[p]\nmodels.m = { input = 1.0 }", "models.'m': output is missing"),
        ("[p]\nmodels.m = { input = -1.0, output = 1.0 }", "models.'m' input"),
        ("[p]\nmodels.m = { input = 1.0, output = 1.0, cache = 1 }", "unknown key(s) ['cache']"),
        ("[p]\nbatch = 2\nmodels = {}", "[p] batch"),
        ("[p]\nmodels = 3", "[p] models"),
        ("not = toml = here", "not valid TOML"),
    ],
)
def test_a_bad_prices_file_is_named_with_its_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, named: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"id": "a", "prompt": "hi"}])
    code = main(["run", str(jobs), "--out", str(tmp_path / "out"), "--mock", "--prices", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"--prices {bad}" in err and named in err
    assert not (tmp_path / "out" / "results").exists()


def test_every_row_has_its_cost_and_status_sums_them(
    tmp_path: Path, mock_server: MockServer, prices_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"id": f"j{i}", "prompt": f"hello {i} " * (i + 1), "model": "m"} for i in range(6)]
    rows.append({"id": "free", "prompt": "no price for this one", "model": "unpriced"})
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    assert run_cli(mock_server, "openai", jobs, out, "--prices", str(prices_file)) == 0
    results = read_results(out)
    total = 0.0
    for i in range(6):
        r = results[f"j{i}"]
        expected = (r["input_tokens"] * 1000.0 + r["output_tokens"] * 2000.0) / 1e6
        assert r["cost_usd"] == pytest.approx(expected)
        total += expected
    assert results["free"]["cost_usd"] is None
    printed = capsys.readouterr().out
    assert f"Cost: {usd(total)} this run; {usd(total)} in all (m {usd(total)})." in printed
    assert main(["status", str(out)]) == 0
    assert f"cost so far {usd(total)} (m {usd(total)})" in capsys.readouterr().out


def test_plan_shows_cost_online_and_by_batch(
    tmp_path: Path, prices_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"id": f"j{i}", "prompt": "abcd" * 10, "max_tokens": 100} for i in range(10)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    args = ["plan", str(jobs), "--model", "cheap", "--prices", str(prices_file)]
    assert main(args) == 0
    out = capsys.readouterr().out
    # input estimated at ~10 tokens a job (4 characters a token): 100 tokens, $1/M: $0.0001;
    # at most 1,000 answer tokens more: $0.0011; batch halves both
    assert "cost: $0.0001 to $0.0011 online; $0.00005 to $0.00055 by batch API" in out


def test_budget_reserves_worst_case_and_settles_to_the_real_cost() -> None:
    prices = Prices({"m": Price(1000.0, 2000.0)}, {})
    budget = Budget(1.0, 0.25, prices)
    # worst case: 125 input tokens (the estimate and a quarter) $0.125 + 200 output $0.40
    first = budget.reserve("m", 100, 200)
    assert first is not None and first.dollars == pytest.approx(0.525)
    assert budget.reserve("m", 100, 200) is None  # 0.25 spent + 0.525 reserved + 0.525 > 1.0
    budget.settle(first, 0.2, output_tokens=50)  # the answer was shorter
    assert budget.spent == pytest.approx(0.45) and budget.reserved == 0
    # without max_tokens, the longest answer so far stands for the worst case
    second = budget.reserve("m", 100, None)
    assert second is not None and second.dollars == pytest.approx(0.125 + 0.1)
    with pytest.raises(KeyError):
        budget.reserve("unknown", 1, 1)


def test_budget_stops_with_exit_5_and_a_rerun_with_more_goes_on(
    tmp_path: Path,
    mock_server: MockServer,
    prices_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    n = 30
    rows = [{"id": f"j{i:02d}", "prompt": f"count to {i}", "max_tokens": 8} for i in range(n)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    flags = ("--model", "m", "--prices", str(prices_file), "--max-concurrency", "4")

    assert run_cli(mock_server, "openai", jobs, out, *flags, "--budget", "0.25") == 5
    first = read_results(out)
    spent = sum(r["cost_usd"] for r in first.values())
    assert 0 < len(first) < n
    assert spent <= 0.25
    err = capsys.readouterr().err
    assert f"Stopped at the budget of $0.25: spent {usd(spent)}" in err
    assert f"{n - len(first)} jobs left" in err

    # the same budget again: the directory has spent it, nothing more fits
    sent = mock_stats(mock_server)["requests"]
    assert run_cli(mock_server, "openai", jobs, out, *flags, "--budget", "0.25") == 5
    assert mock_stats(mock_server)["requests"] - sent <= 1  # at most the one that still fitted

    assert run_cli(mock_server, "openai", jobs, out, *flags, "--budget", "100") == 0
    final = read_results(out)
    assert len(final) == n and all(r["status"] == "ok" for r in final.values())
    assert mock_stats(mock_server)["requests"] == n  # nothing was sent twice
    for job_id, row in first.items():
        assert final[job_id] == row  # finished work kept as it was


def test_a_budget_needs_a_price_for_every_model(
    tmp_path: Path, mock_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"id": "a", "prompt": "hi"}])
    args = ("--model", "no-such-price", "--budget", "5")
    assert run_cli(mock_server, "openai", jobs, tmp_path / "out", *args) == 2
    err = capsys.readouterr().err
    assert "no price is known for model 'no-such-price'" in err and "--prices FILE" in err
    assert mock_stats(mock_server)["requests"] == 0


@given(
    limit=st.floats(0.0, 10.0),
    already=st.floats(0.0, 5.0),
    jobs=st.lists(
        st.tuples(
            st.integers(1, 5000),  # estimated input tokens
            st.integers(1, 4000),  # max_tokens
            st.floats(0.0, 1.25),  # real input / estimate (within the reservation's margin)
            st.floats(0.0, 1.0),  # real output / max_tokens
            st.booleans(),  # settle this one now (else it stays in flight a while)
        ),
        max_size=40,
    ),
)
def test_with_max_tokens_the_spend_never_passes_the_budget(
    limit: float, already: float, jobs: list[tuple[int, int, float, float, bool]]
) -> None:
    price = Price(input=3.0, output=15.0)
    budget = Budget(limit, min(already, limit), Prices({"m": price}, {}))
    in_flight = []
    for tokens, max_tokens, real_in, real_out, now in jobs:
        reservation = budget.reserve("m", tokens, max_tokens)
        if reservation is not None:
            cost = price.cost(int(tokens * real_in), int(max_tokens * real_out))
            in_flight.append((reservation, cost))
        if now and in_flight:
            r, cost = in_flight.pop(0)
            budget.settle(r, cost)
        assert budget.spent + budget.reserved <= limit + 1e-9
    for r, cost in in_flight:
        budget.settle(r, cost)
    assert budget.spent <= limit + 1e-9 and budget.reserved == pytest.approx(0, abs=1e-9)


def test_the_progress_line_shows_what_the_run_has_cost() -> None:
    from batcher._core.stats import Statistics
    from batcher._progress import format_line

    st_ = Statistics(10, 4, 4, 0, 0, 1, 5, 100, 50, 60.0, 900.0, 4.0, cost_usd=0.0123)
    assert " | $0.0123 | " in format_line(st_)
    assert "$" not in format_line(Statistics(10, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0))
