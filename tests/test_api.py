"""The public API is what ``batcher/__init__.py`` exports; this pins it."""

import batcher


def test_public_names_are_pinned() -> None:
    assert sorted(batcher.__all__) == sorted(
        [
            "BadOption",
            "BatcherError",
            "Clock",
            "DamagedFile",
            "DirectoryLocked",
            "FatalProviderError",
            "InputError",
            "InputProblem",
            "InvalidOutput",
            "Job",
            "Message",
            "Outage",
            "Part",
            "PermanentJobError",
            "QuotaExhausted",
            "RateLimitError",
            "ProviderError",
            "RetryableError",
            "RunOptions",
            "RunSummary",
            "Runner",
            "SchemaError",
            "Statistics",
            "SystemClock",
            "UsageError",
            "WriteFailed",
            "results",
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
