"""The command line's grammar: every ``batcher`` command and the flags it takes (the options'
own from their fields, ``flags.add_flags``; the rest here), and a parser that names the closest
flag to one it does not know."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["Parser", "batcher_version", "build_parser"]


def batcher_version() -> str:
    """batcher's installed version, for ``--version``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("batcher")
    except PackageNotFoundError:
        return "unknown (not installed)"


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose error for an unknown flag names the command's closest flag."""

    commands: dict[str, argparse.ArgumentParser]

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        import difflib

        parsed, extras = self.parse_known_args(args, namespace)
        if not extras:
            return parsed
        commands: dict[str, argparse.ArgumentParser] = getattr(self, "commands", {})
        where = commands.get(getattr(parsed, "command", None) or "", self)
        known = [s for a in where._actions for s in a.option_strings]
        message = f"unrecognized arguments: {' '.join(extras)}"
        for word in extras:
            if word.startswith("-"):
                close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1)
                if close:
                    message += f" (did you mean {close[0]}?)"
                    break
        where.error(message)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command and its flags (the options' own from ``flags.add_flags``)."""
    from .flags import add_flags

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p.commands[name] = sub.add_parser(name, help=help, allow_abbrev=False)
        return p.commands[name]

    p = Parser(
        prog="batcher",
        description="Push large sets of LLM prompts through rate-limited APIs, never losing work.",
        allow_abbrev=False,
    )
    p.add_argument("--version", action="version", version=f"batcher {batcher_version()}")
    p.commands = {}
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = command("run", "run job files into an output directory")
    r.add_argument(
        "jobs",
        nargs="+",
        metavar="JOBS",
        help=".jsonl, .jsonl.gz or .parquet files: paths, or s3://, gs://, az://, hf:// URLs (with "
        "globs: s3://bucket/prefix/*.parquet) or an https:// URL",
    )
    r.add_argument("--out", required=True, metavar="DIR", help="output directory (results/ inside)")
    add_flags(
        r,
        ("endpoint", "requests", "columns", "limits", "resume", "costs", "batch", "media", "pool"),
        overrides={"provider": {"default": None}},  # so that --pool can refuse it when given
    )
    r.add_argument("--no-progress", action="store_true", help="no progress display or lines")
    r.add_argument(
        "--export",
        metavar="URL",
        help="once the run is done, write its results as one Parquet file to URL (s3://, gs://, "
        "az://, hf:// or a path; URL/results.parquet unless it ends in .parquet), published whole",
    )

    command("tiers", "list the tier presets")

    ex = command("export", "write the results in DIR to URL as one Parquet file, published whole")
    ex.add_argument("dir", metavar="DIR")
    ex.add_argument(
        "url",
        metavar="URL",
        help="s3://, gs://, az://, hf:// or a path; URL/results.parquet unless it ends in .parquet",
    )

    pl = command("plan", "how long JOBS will take under a tier, before sending")
    pl.add_argument("jobs", nargs="+", metavar="JOBS")
    add_flags(
        pl,
        ("endpoint", "requests", "columns", "limits", "costs", "media"),
        only=(
            *("provider", "model", "prompt_column", "prompt_template", "id_column"),
            *("tier", "rpm", "tpm", "rpd", "limits_file", "prices_file", "schema", "api"),
        ),
        overrides={
            "provider": {
                "default": None,
                "help": "wire format (default: the tier's provider, else openai)",
            },
        },
    )

    b = command("bench", "drive a synthetic load and measure what a tier gives")
    add_flags(
        b,
        ("limits", "requests", "endpoint", "media"),
        only=("tier", "model", "base_url", "api_key_env", "max_concurrency", "api", "dimensions"),
        overrides={
            "tier": {"required": True},
            "model": {"help": "model (default: the tier's first)"},
            "base_url": {
                "help": "endpoint to measure (default: the mock provider enforcing the tier)"
            },
            "max_concurrency": {
                "help": "requests in flight at most (default: as many as the tier's rate times "
                "the answers' times needs)"
            },
        },
    )
    b.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="how long to drive the load (default 60)",
    )
    b.add_argument("--plot", metavar="FILE.png", help="draw requests per second against the limit")

    s = command("status", "how far the run in DIR has got")
    s.add_argument("dir", metavar="DIR")
    add_flags(s, ("pool",), only=("quota_store",))

    rp = command("report", "write an HTML report of the run in DIR (charts, cost, errors)")
    rp.add_argument("dir", metavar="DIR")
    rp.add_argument(
        "-o", "--output", metavar="FILE.html", help="where to write it (default DIR/report.html)"
    )

    sh = command("show", "a table of the results in DIR")
    sh.add_argument("dir", metavar="DIR")
    sh.add_argument("-n", type=int, default=20, metavar="N", help="rows to show (default 20)")
    sh.add_argument("--errors", action="store_true", help="only jobs that ended in error")
    sh.add_argument(
        "--columns",
        metavar="COL,...",
        help="columns to show, comma-separated (default: id, status, model, tokens, cost, text)",
    )

    m = command("mock-server", "serve the mock provider on loopback")
    m.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    m.add_argument(
        "--provider",
        choices=["openai", "gemini"],
        default="openai",
        help="which base URL to print (both wire formats are always served)",
    )
    m.add_argument(
        "--latency-ms",
        default="0",
        metavar="MS",
        help="answer latency: MS, or MIN-MAX for a uniform range (default 0)",
    )
    m.add_argument("--seed", type=int, default=0, help="seed of the mock's randomness")
    m.add_argument(
        "--openai-per-minute",
        action="store_true",
        help="enforce OpenAI-style limits over a sliding minute, not quantized per second",
    )
    m.add_argument(
        "--openai-window",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="quantize OpenAI-style limits per this many seconds (default 1; Azure: 1 or 10)",
    )
    m.add_argument(
        "--token-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="count prompt tokens X times the mock's own tokenizer (default 1)",
    )
    add_flags(m, ("limits",), only=("tier", "rpm", "tpm", "rpd"))
    for flag, what in (
        ("--fail-500", "answer 500"),
        ("--fail-503", "answer 503"),
        ("--drop", "drop the connection mid-answer"),
        ("--truncate", "cut a 200's body short"),
        ("--slow", "answer after --slow-ms"),
    ):
        m.add_argument(
            flag,
            type=float,
            default=0.0,
            metavar="RATE",
            help=f"share of requests to {what} (0 to 1)",
        )
    m.add_argument(
        "--slow-ms",
        type=float,
        default=5000.0,
        metavar="MS",
        help="delay of a slow answer (default 5000)",
    )
    m.add_argument(
        "--batch-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="seconds a batch runs before its lines are answered (default 0: at once)",
    )
    m.add_argument(
        "--batch-gradual",
        action="store_true",
        help="answer a batch's lines one by one over --batch-delay, not all at its end",
    )
    m.add_argument(
        "--file-ttl",
        type=float,
        default=48 * 3600.0,
        metavar="SECONDS",
        help="seconds an uploaded file lives (default 48 h, as Gemini's); requests naming it "
        "after are refused",
    )
    m.add_argument(
        "--file-processing",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="seconds a video uploaded to Gemini's Files API stays PROCESSING before it is "
        "ACTIVE (default 0); requests naming it meanwhile are refused",
    )
    return p
