"""The public API is what ``batcher/__init__.py`` exports; this pins it."""

from pathlib import Path

import httpx
import pytest

import batcher


def test_public_names_are_pinned() -> None:
    assert sorted(batcher.__all__) == sorted(
        [
            "BadOption",
            "BatchOptions",
            "BatcherError",
            "Clock",
            "ColumnOptions",
            "CostOptions",
            "EndpointOptions",
            "LimitOptions",
            "MediaOptions",
            "PoolOptions",
            "RequestOptions",
            "ResumeOptions",
            "RunKeywords",
            "DamagedFile",
            "DirectoryLocked",
            "FatalProviderError",
            "InputError",
            "InputProblem",
            "InvalidOutput",
            "Job",
            "Message",
            "NetworkRefused",
            "Outage",
            "Part",
            "PermanentJobError",
            "QuotaExhausted",
            "RateLimitError",
            "ProviderError",
            "ProxyRefused",
            "RetryableError",
            "RunOptions",
            "RunSummary",
            "Runner",
            "SchemaError",
            "Statistics",
            "SystemClock",
            "UntrustedCertificate",
            "UsageError",
            "WriteFailed",
            "results",
            "results_table",
            "export",
            "Exported",
            "run",
            "run_sync",
            "Price",
            "Prices",
            "load_prices",
        ]
    )
    for name in batcher.__all__:
        assert getattr(batcher, name) is not None


def test_error_tree() -> None:
    for cls in (batcher.UsageError, batcher.InputError, batcher.ProviderError):
        assert issubclass(cls, batcher.BatcherError)
    for cls in (batcher.FatalProviderError, batcher.PermanentJobError, batcher.RetryableError):
        assert issubclass(cls, batcher.ProviderError)
    for network in (batcher.ProxyRefused, batcher.UntrustedCertificate):  # stop the run (78)
        assert issubclass(network, batcher.NetworkRefused)
    assert issubclass(batcher.NetworkRefused, batcher.FatalProviderError)
    assert issubclass(batcher.InvalidOutput, batcher.RetryableError)  # retried, counts
    for usage in (batcher.DirectoryLocked, batcher.DamagedFile, batcher.SchemaError):
        assert issubclass(usage, batcher.UsageError)  # the CLI's exit 2
    for own_exit in (batcher.WriteFailed, batcher.Outage):
        assert issubclass(own_exit, batcher.BatcherError)
        assert not issubclass(own_exit, (batcher.UsageError, batcher.ProviderError))


def test_errors_say_what_happened_and_what_to_do() -> None:
    import errno
    import time
    from pathlib import Path

    since = time.mktime((2026, 11, 28, 1, 50, 12, 0, 0, -1))
    locked = batcher.DirectoryLocked(Path("out"), 1234, since)
    assert str(locked) == (
        "out is in use by another batcher run (pid 1234, since 2026-11-28 01:50:12); "
        "wait for it to finish or use another --out"
    )
    full = batcher.WriteFailed.from_os_error(
        OSError(errno.ENOSPC, "No space left on device"), Path("out/journal/seg-000001.jsonl")
    )
    assert (full.path, full.reason) == (
        Path("out/journal/seg-000001.jsonl"),
        "No space left on device",
    )
    assert "out/journal/seg-000001.jsonl: No space left on device; free some space" in str(full)
    assert "finished jobs are kept" in str(full)
    down = batcher.Outage("https://api.example", 600.0, "connection refused")
    assert (down.endpoint, down.lasted, down.last_error) == (
        "https://api.example",
        600.0,
        "connection refused",
    )
    assert "for 10 min (last error: connection refused); finished jobs are kept" in str(down)
    damaged = batcher.DamagedFile(Path("out/ledger.json"), "not JSON")
    assert "out/ledger.json cannot be read (not JSON); fix it or delete it" in str(damaged)
    assert "today's request count" in str(damaged)


def test_every_public_name_resolves_and_dir_lists_the_lazy_ones() -> None:
    for name in batcher.__all__:
        assert getattr(batcher, name) is not None, name
    assert set(batcher.__all__) <= set(dir(batcher))
    assert {"run", "RunOptions", "PoolOptions", "results"} <= set(dir(batcher))


def test_the_run_keywords_are_exactly_the_option_groups_and_their_options() -> None:
    """``RunKeywords`` (what type checkers hold ``batcher.run(...)`` to) names every group and
    every option of every group, with the type the group's field has."""
    from dataclasses import fields

    from batcher._config.options import _GROUPS

    hints = batcher.RunKeywords.__annotations__

    def text(hint: object) -> str:
        return str(getattr(hint, "__forward_arg__", hint))

    expected = {group: cls.__name__ for group, cls in _GROUPS.items()}
    for cls in _GROUPS.values():
        expected |= {f.name: str(f.type) for f in fields(cls) if f.init}
    assert {name: text(hint) for name, hint in hints.items()} == expected


def test_a_group_given_as_something_else_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"pool= takes a batcher\.PoolOptions.*pool_file"):
        batcher.run_sync("jobs/example.jsonl", tmp_path, pool="jobs/pool.toml")  # type: ignore[typeddict-item]
    with pytest.raises(TypeError, match=r"unknown option 'max_concurency' \(did you mean"):
        batcher.RunOptions(max_concurency=3)  # type: ignore[typeddict-unknown-key]
    assert not any(tmp_path.iterdir())  # nothing written


def test_run_takes_what_runner_takes(tmp_path: Path) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]},
        )

    summary = batcher.run_sync(
        [{"id": "a", "prompt": "x"}],
        tmp_path,
        transport=httpx.MockTransport(answer),
        options=batcher.RunOptions(
            endpoint=batcher.EndpointOptions(api_key="k", base_url="http://p.test/v1"),
            requests=batcher.RequestOptions(model="m"),
        ),
    )
    assert (summary.ok, summary.exit_code) == (1, 0)
