"""The command line under fuzzing: whatever a user types, ``batcher`` answers with a documented
exit code and readable lines, never a traceback and never an internal error (70).

Arguments are drawn from the real subcommands and flags, mistyped and abbreviated ones, and odd
values (``-1``, ``nan``, ``''``, missing or garbage files, an ``--out`` that is a regular file).
Nothing leaves the machine and nothing waits long: a run uses the embedded mock (``--mock
instant``) or a refused loopback port, with one attempt a job, on at most four jobs (fewer than
the failures in a row that make an outage); ``bench`` always gets a ``--seconds`` of at most
0.05, and ``mock-server`` always a ``--port`` it cannot serve on.
"""

from __future__ import annotations

import gzip
import itertools
import os
import resource
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batcher._cli.main import main
from tests.helpers import write_jsonl, write_parquet

T = TypeVar("T")

DOCUMENTED = {0, 1, 2, 3, 4, 70, 74, 75, 130, 141, 143}
INTERNAL_ERROR = 70

# Values are literal text, or ``@name``: a path or port of the ``Place`` below.
JOB_FILES = [
    "@jobs",
    "@jobs_no_model",
    "@jobs_gz",
    "@jobs_parquet",
    "@garbage_jsonl",
    "@binary_jsonl",
    "@garbage_gz",
    "@garbage_parquet",
    "@missing_jsonl",
    "@dir_jsonl",
    "@regular_file",
    "",
]
OUTS = ["@fresh", "@fresh", "@fresh", "@run_dir", "@regular_file", "@under_file", "@empty_dir"]
STATUS_DIRS = [
    "@run_dir",
    "@missing_dir",
    "@regular_file",
    "@empty_dir",
    "@damaged_manifest",
    "@damaged_ledger",
    "",
]
SAFE_ENDPOINTS = [["--mock", "instant"], ["--base-url", "@refused_url"], ["--mock"]]
SAFETY = ["--max-attempts", "1", "--max-outage", "1s"]
"""Put before the drawn flags: a run against a refused port gives up at once. The drawn flags may
override them only with values that keep the run short (at most one attempt a job)."""

ODD_INTS = ["-1", "0", "", "nan", "x", "1.5", "1e3"]
NO_VALUE = None
RUN_FLAGS: dict[str, list[str] | None] = {
    "--provider": ["openai", "gemini", "GEMINI", "", "x"],
    "--base-url": [
        "@refused_url",
        "notaurl",
        "ftp://127.0.0.1:9/v1",
        "http://[::1",
        "http://127.0.0.1:99999/v1",
        "http://:80/v1",
    ],
    "--api-key-env": ["", "BATCHER_FUZZ_UNSET", "OPENAI_API_KEY"],
    "--mock": ["instant", "", "nosuch", "@jobs", "faulty"],
    "--model": ["m", "", "no-such-model"],
    "--max-concurrency": [*ODD_INTS, "1", "3"],
    "--max-attempts": [*ODD_INTS, "1"],
    "--timeout": ["-1", "0", "", "x", "0.001", "5", "inf"],
    "--max-outage": ["-1", "0", "", "x", "1s", "0.5", "1h30m", "90", "1m1", "s"],
    "--prompt-column": ["prompt", "", "x"],
    "--prompt-template": ["", "{", "{prompt}", "{x}", "{a.b}", "{0}"],
    "--id-column": ["id", "", "x"],
    "--tier": ["", "nosuch", "openai-tier5"],
    "--rpm": [*ODD_INTS, "1000000000"],
    "--tpm": [*ODD_INTS, "1000000000"],
    "--rpd": [*ODD_INTS, "1000000000"],
    "--limits": [
        "@limits",
        "@garbage_toml",
        "@binary_toml",
        "@models_not_a_table_toml",
        "@missing_toml",
        "@dir_jsonl",
        "",
    ],
    "--on-daily-limit": ["wait", "exit", "x", ""],
    "--quota-day": ["pacific", "rolling", "x"],
    "--retry-errors": NO_VALUE,
    "--redo-changed": NO_VALUE,
    "--no-progress": NO_VALUE,
}
PLAN_FLAGS = {
    k: RUN_FLAGS[k]
    for k in (
        *("--provider", "--model", "--prompt-column", "--prompt-template", "--id-column"),
        *("--tier", "--rpm", "--tpm", "--rpd", "--limits"),
    )
}
BENCH_FLAGS: dict[str, list[str] | None] = {
    "--model": ["m", "", "no-such-model"],
    "--base-url": ["@refused_url", "notaurl"],
    "--api-key-env": ["", "BATCHER_FUZZ_UNSET"],
    "--max-concurrency": ODD_INTS,
    "--plot": ["@missing_dir/plot.png", ""],
}
BENCH_TIERS = ["openai-tier1", "gemini-tier1", "", "nosuch"]
BENCH_SECONDS = ["-1", "0", "", "x", "nan", "0.05"]
"""Never a long bench: the default is 60 s, so ``--seconds`` is always given."""
MOCK_FLAGS: dict[str, list[str] | None] = {
    "--provider": ["openai", "gemini", "x"],
    "--latency-ms": ["0", "5-1", "x", "-1", "1-2-3", ""],
    "--seed": ["1", "x", "-1"],
    "--tier": ["openai-tier1", "nosuch"],
    "--rpm": ODD_INTS,
    "--fail-500": ["0.5", "2", "-1", "x"],
    "--drop": ["0.1", "nan"],
    "--slow-ms": ["10", "-1", "x"],
    "--openai-per-minute": NO_VALUE,
    "--openai-window": ["10", "0", "nan", "x", "61"],
    "--token-scale": ["1.6", "0", "-1", "inf", "x"],
    "--batch-delay": ["30", "-1", "inf", "x"],
    "--batch-gradual": NO_VALUE,
}
BAD_PORTS = ["-1", "70000", "@busy_port", "x", ""]
"""``mock-server`` always gets one of these last, so it never starts serving."""
TYPOS: dict[str, list[str] | None] = {
    "--mode": ["batch"],
    "--max-con": ["3"],
    "--max-a": ["1"],
    "--max-out": ["1s"],
    "--modle": ["m"],
    "--concurrency": ["3"],
    "--out-dir": ["@fresh"],
    "--outdir": ["@fresh"],
    "-o": ["@fresh"],
    "-m": ["m"],
    "--m": ["instant"],
    "--ti": ["openai-tier1"],
    "--base": ["@refused_url"],
    "--lim": ["@limits"],
    "--prompt-t": ["{prompt}"],
    "--retry-error": NO_VALUE,
    "--retry": NO_VALUE,
    "--no-prog": NO_VALUE,
    "--mode=batch": NO_VALUE,
    "--max-con=3": NO_VALUE,
    "--timeout=": NO_VALUE,
    "--port": ["1"],
    "--seconds": ["1"],
    "-": NO_VALUE,
    "--": NO_VALUE,
    "-h": NO_VALUE,
    "--help": NO_VALUE,
}


def _mostly(sensible: T, choices: list[T]) -> st.SearchStrategy[T]:
    """``sensible`` about half the time, else any of ``choices``: most drawn command lines get
    past the parser and run, the rest probe its edges."""
    return st.one_of(st.just(sensible), st.sampled_from(choices))


def _flags(table: dict[str, list[str] | None], *, max_size: int) -> st.SearchStrategy[list[str]]:
    """Up to ``max_size`` flags of ``table``, each mostly with its first (sensible) value."""

    def one(name: str) -> st.SearchStrategy[list[str]]:
        values = table[name]
        if values is None:
            return st.just([name])
        return _mostly(values[0], values).map(lambda v: [name, v])

    pairs = st.sampled_from(sorted(table)).flatmap(one)
    return st.lists(pairs, max_size=max_size).map(lambda ps: [a for p in ps for a in p])


def _sometimes_typos() -> st.SearchStrategy[list[str]]:
    """Mostly nothing; now and then one mistyped, abbreviated or stray flag."""
    nothing: st.SearchStrategy[list[str]] = st.just([])
    return st.one_of(nothing, nothing, nothing, _flags(TYPOS, max_size=1))


@st.composite
def run_args(draw: st.DrawFn) -> list[str]:
    jobs = draw(_mostly(["@jobs"], [[], ["@jobs", "@jobs_no_model"], *([f] for f in JOB_FILES)]))
    out = draw(_mostly("@fresh", [*OUTS, None]))
    return [
        "run",
        *jobs,
        *([] if out is None else ["--out", out]),
        *draw(st.sampled_from(SAFE_ENDPOINTS)),
        *SAFETY,
        *draw(_flags(RUN_FLAGS, max_size=3)),
        *draw(_sometimes_typos()),
    ]


@st.composite
def plan_args(draw: st.DrawFn) -> list[str]:
    jobs = draw(_mostly(["@jobs"], [[], *([f] for f in JOB_FILES)]))
    return ["plan", *jobs, *draw(_flags(PLAN_FLAGS, max_size=3)), *draw(_sometimes_typos())]


@st.composite
def status_args(draw: st.DrawFn) -> list[str]:
    dirs = draw(_mostly(["@run_dir"], [[], ["@run_dir", "@run_dir"], *([d] for d in STATUS_DIRS)]))
    return ["status", *dirs, *draw(_sometimes_typos())]


@st.composite
def bench_args(draw: st.DrawFn) -> list[str]:
    tier = draw(_mostly("openai-tier1", [*BENCH_TIERS, None]))
    return [
        "bench",
        *([] if tier is None else ["--tier", tier]),
        *draw(_flags(BENCH_FLAGS, max_size=2)),
        *draw(_sometimes_typos()),
        "--seconds",
        draw(st.sampled_from(BENCH_SECONDS)),
    ]


@st.composite
def mock_server_args(draw: st.DrawFn) -> list[str]:
    return [
        "mock-server",
        *draw(_flags(MOCK_FLAGS, max_size=3)),
        *draw(_sometimes_typos()),
        "--port",
        draw(st.sampled_from(BAD_PORTS)),
    ]


@st.composite
def other_args(draw: st.DrawFn) -> list[str]:
    head = draw(st.sampled_from([[], ["tiers"], ["rum"], ["stat"], ["Run"], [""], ["-x"]]))
    return [*head, *draw(_sometimes_typos())]


ARGV = st.one_of(
    run_args(),
    run_args(),
    run_args(),
    plan_args(),
    status_args(),
    bench_args(),
    mock_server_args(),
    other_args(),
)


@dataclass
class Place:
    """The files and sockets the drawn arguments name, made once for the module."""

    root: Path
    paths: dict[str, Path]
    refused_port: int
    busy_port: int
    fresh: Iterator[int]

    def resolve(self, arg: str) -> str:
        if not arg.startswith("@"):
            return arg
        name, _, rest = arg[1:].partition("/")
        if name == "fresh":
            value = str(self.root / f"out-{next(self.fresh)}")
        elif name == "refused_url":
            value = f"http://127.0.0.1:{self.refused_port}/v1"
        elif name == "busy_port":
            value = str(self.busy_port)
        else:
            value = str(self.paths[name])
        return f"{value}/{rest}" if rest else value


def _make_files(root: Path) -> dict[str, Path]:
    rows = [{"id": "a", "prompt": "one", "model": "m"}, {"id": "b", "prompt": "two", "model": "m"}]
    paths = {
        "jobs": write_jsonl(root / "jobs.jsonl", rows),
        "jobs_no_model": write_jsonl(
            root / "no_model.jsonl", [{"id": f"n{i}", "prompt": "hi"} for i in range(2)]
        ),
        "jobs_gz": write_jsonl(root / "jobs.jsonl.gz", rows),
        "jobs_parquet": write_parquet(root / "jobs.parquet", rows),
        "garbage_jsonl": root / "garbage.jsonl",
        "binary_jsonl": root / "binary.jsonl",
        "garbage_gz": root / "garbage.jsonl.gz",
        "garbage_parquet": root / "garbage.parquet",
        "missing_jsonl": root / "missing.jsonl",
        "dir_jsonl": root / "dir.jsonl",
        "regular_file": root / "regular-file",
        "under_file": root / "regular-file" / "out",
        "empty_dir": root / "empty-dir",
        "missing_dir": root / "missing-dir",
        "limits": root / "limits.toml",
        "garbage_toml": root / "garbage.toml",
        "binary_toml": root / "binary.toml",
        "models_not_a_table_toml": root / "models.toml",
        "missing_toml": root / "missing.toml",
        "run_dir": root / "run-dir",
        "damaged_manifest": root / "damaged-manifest",
        "damaged_ledger": root / "damaged-ledger",
        "logs": root / "logs",
    }
    paths["garbage_jsonl"].write_text('{"id": "a", "prompt": \nnot json\n[1]\n')
    paths["binary_jsonl"].write_bytes(b"\xff\xfe\x00\x01\n\x80")
    paths["garbage_gz"].write_bytes(b"not gzip at all")
    paths["garbage_parquet"].write_bytes(b"PAR1 but not really")
    paths["dir_jsonl"].mkdir()
    paths["regular_file"].write_text("a regular file\n")
    paths["empty_dir"].mkdir()
    paths["logs"].mkdir()
    paths["limits"].write_text('["m"]\nrpm = 100000\ntpm = 100000000\n')
    paths["garbage_toml"].write_text("[[[ = \n")
    paths["binary_toml"].write_bytes(b"[m]\nrpm = \xff\xfe")
    paths["models_not_a_table_toml"].write_text("models = 5\n")
    assert gzip.decompress(paths["jobs_gz"].read_bytes())
    return paths


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Place]:
    root = tmp_path_factory.mktemp("fuzz")
    paths = _make_files(root)
    for name in ("run_dir", "damaged_manifest", "damaged_ledger"):
        argv = ["run", str(paths["jobs"]), "--out", str(paths[name]), "--mock", "instant"]
        assert main([*argv, "--no-progress"]) == 0
    (paths["damaged_manifest"] / "run.json").write_text('{"provider": "openai", "to')
    (paths["damaged_ledger"] / "ledger.json").write_bytes(b"\x00\x01 not a ledger")
    # refused: bound, never listening; busy: listening, so no server can bind it
    with socket.socket() as refused, socket.socket() as busy:
        refused.bind(("127.0.0.1", 0))
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield Place(root, paths, refused.getsockname()[1], busy.getsockname()[1], itertools.count())


def _call(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``main(argv)``: its exit code (argparse's SystemExit included) and its stderr."""
    try:
        code = main(argv)
    except SystemExit as e:
        assert isinstance(e.code, int), e.code
        assert e.code == 2 or (e.code == 0 and ("-h" in argv or "--help" in argv)), e.code
        code = e.code
    else:
        assert type(code) is int, code
    return code, capsys.readouterr().err


@pytest.fixture
def in_place(
    place: Place, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Place:
    """Run from the fuzz root (``--out ''`` is the current directory), with keys in the
    environment, the log of an internal error kept under the root, and no leftover output."""
    monkeypatch.chdir(place.root)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fuzz")
    monkeypatch.setenv("GEMINI_API_KEY", "g-fuzz")
    monkeypatch.delenv("BATCHER_FUZZ_UNSET", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(place.paths["logs"]))
    capsys.readouterr()
    return place


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=ARGV)
def test_any_command_line_ends_with_a_documented_code_and_no_traceback(
    drawn: list[str], in_place: Place, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [in_place.resolve(a) for a in drawn]
    code, err = _call(argv, capsys)
    assert code in DOCUMENTED, (argv, code, err)
    assert code != INTERNAL_ERROR, (argv, err)
    assert "Traceback" not in err, (argv, err)


def _run(place: Place, *flags: str) -> list[str]:
    out = place.resolve("@fresh")
    return ["run", str(place.paths["jobs"]), "--out", out, "--no-progress", *flags]


@pytest.mark.parametrize(
    ("flags", "typed"),
    [
        (["--mock", "instant", "--mod", "batch"], "--mod batch"),
        (["--mock", "instant", "--mod=batch"], "--mod=batch"),
        (["--mock", "instant", "--max-con", "3"], "--max-con 3"),
        (["--mock", "instant", "--max-con=3"], "--max-con=3"),
        (["--mock", "instant", "--max-a", "1"], "--max-a 1"),
        (["--mock", "instant", "--no-prog"], "--no-prog"),
        (["--mock", "instant", "--retry"], "--retry"),
        (["--m", "instant"], "--m instant"),
        (["--mo", "instant"], "--mo instant"),
    ],
)
def test_an_abbreviated_run_flag_is_refused_and_nothing_is_written(
    in_place: Place, capsys: pytest.CaptureFixture[str], flags: list[str], typed: str
) -> None:
    """``--mod batch`` is neither ``--mode`` nor ``--model``, nor ``--max-con``
    ``--max-concurrency``."""
    argv = _run(in_place, *flags)
    code, err = _call(argv, capsys)
    assert code == 2, err
    assert f"unrecognized arguments: {typed}" in err
    assert not Path(argv[3]).exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", "@jobs", "--ti", "openai-tier1"],
        ["plan", "@jobs", "--mod", "m"],
        ["bench", "--tier", "openai-tier1", "--ti", "gemini-tier1", "--seconds", "0"],
        ["bench", "--tier", "openai-tier1", "--sec", "0"],
        ["mock-server", "--po", "1"],
        ["mock-server", "--lat", "5", "--port", "@busy_port"],
    ],
)
def test_an_abbreviated_flag_is_refused_by_every_command(
    in_place: Place, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, err = _call([in_place.resolve(a) for a in argv], capsys)
    assert code == 2, err
    assert "unrecognized arguments" in err


def _run_with(*flags: str) -> list[str]:
    return ["run", "@jobs", "--out", "@fresh", *flags]


@pytest.mark.parametrize(
    ("argv", "allowed"),
    [
        # a duration that is not a number of seconds: the run would never end on an outage
        (_run_with("--mock", "instant", "--max-outage", "nan"), {2}),
        (_run_with("--mock", "instant", "--timeout", "nan"), {2}),
        (["bench", "--tier", "openai-tier1", "--seconds", "nan"], {2}),
        # an empty --out is not a directory: it must not write the run into the current one
        (["run", "@jobs", "--out", "", "--mock", "instant"], {2}),
        # a base URL that cannot be a URL: refused before anything is sent
        (_run_with("--base-url", "http://[::1", *SAFETY), {2}),
        (_run_with("--base-url", "http://:80/v1", *SAFETY), {2}),
        (_run_with("--base-url", "http://127.0.0.1:99999/v1", *SAFETY), {2}),
        (_run_with("--base-url", "notaurl", *SAFETY), {2}),
        # a port the mock provider cannot bind
        (["mock-server", "--port", "-1"], {2}),
        (["mock-server", "--port", "70000"], {2}),
        (["mock-server", "--port", "@busy_port"], {2}),
        # a limits file that is not UTF-8, or whose models are not a table
        (["plan", "@jobs", "--limits", "@binary_toml"], {2}),
        (["plan", "@jobs", "--limits", "@models_not_a_table_toml"], {2}),
        # a plot that cannot be written
        (
            ["bench", "--tier", "openai-tier1", "--seconds", "0", "--plot", "@missing_dir/p.png"],
            {2, 74},
        ),
    ],
    ids=[
        "max-outage-nan",
        "timeout-nan",
        "bench-seconds-nan",
        "empty-out",
        "base-url-bad-ipv6",
        "base-url-no-host",
        "base-url-bad-port",
        "base-url-no-scheme",
        "mock-port-negative",
        "mock-port-too-big",
        "mock-port-busy",
        "limits-not-utf8",
        "limits-models-not-a-table",
        "bench-plot-missing-dir",
    ],
)
def test_an_odd_value_is_refused_with_one_line(
    in_place: Place, capsys: pytest.CaptureFixture[str], argv: list[str], allowed: set[int]
) -> None:
    resolved = [in_place.resolve(a) for a in argv]
    before = sorted(p.name for p in in_place.root.iterdir())
    code, err = _call([*resolved, "--no-progress"] if argv[0] == "run" else resolved, capsys)
    assert code in allowed, (code, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    if argv[0] == "run" and code == 2:  # nothing was written
        after = sorted(p.name for p in in_place.root.iterdir())
        assert after == before


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def test_a_huge_max_concurrency_on_two_jobs_ends_at_once(place: Place) -> None:
    """``--max-concurrency`` caps requests in flight; two jobs need two, whatever the cap."""
    out = place.resolve("@fresh")
    argv = ["run", str(place.paths["jobs"]), "--out", out, "--mock", "instant", "--no-progress"]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "batcher", *argv, "--max-concurrency", str(10**9)],
            env={**os.environ, "OPENAI_API_KEY": "sk-fuzz"},
            capture_output=True,
            text=True,
            timeout=10,
            preexec_fn=_limit_memory,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("two jobs with --max-concurrency 1000000000 did not end within 10 s")
    assert done.returncode in (0, 2), done.stderr
    assert "Traceback" not in done.stderr
