"""The public API is what ``batcher/__init__.py`` exports; this pins it."""

import batcher


def test_public_names_are_pinned() -> None:
    assert sorted(batcher.__all__) == sorted(
        [
            "BatcherError",
            "Clock",
            "FatalProviderError",
            "InputError",
            "InputProblem",
            "Job",
            "Message",
            "Part",
            "PermanentJobError",
            "QuotaExhausted",
            "RateLimitError",
            "ProviderError",
            "RetryableError",
            "RunOptions",
            "RunSummary",
            "Runner",
            "Statistics",
            "SystemClock",
            "UsageError",
            "run",
            "run_sync",
        ]
    )
    for name in batcher.__all__:
        assert getattr(batcher, name) is not None


def test_error_tree() -> None:
    for cls in (batcher.UsageError, batcher.InputError, batcher.ProviderError):
        assert issubclass(cls, batcher.BatcherError)
    for cls in (batcher.FatalProviderError, batcher.PermanentJobError, batcher.RetryableError):
        assert issubclass(cls, batcher.ProviderError)
