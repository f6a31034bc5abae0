"""batcher's exceptions: one small tree, each carrying what a user needs to act.

    BatcherError
    ├── UsageError            options that cannot work (exit 2)
    │   ├── SchemaError             an output schema that cannot be used: where and why
    │   ├── DirectoryLocked         another run works in the output directory: who, since when
    │   └── DamagedFile             run.json or ledger.json cannot be read: fix or delete it
    ├── InputError            bad job files or lines, each problem named (exit 2)
    ├── WriteFailed           a write under the output directory failed: no space... (exit 74)
    ├── Outage                the endpoint stayed unreachable too long (exit 75)
    │   └── StoreOutage             so did the quota store the run shares its budgets through
    ├── QuotaExhausted        a model's daily quota is spent: its jobs wait for the reset (exit 3)
    └── ProviderError         what a provider answered, classified once
        ├── FatalProviderError      wrong for the whole run: bad key, unknown model
        │   └── NetworkRefused      the network in between, not the endpoint, stops us (exit 78)
        │       ├── ProxyRefused        the proxy refused us: 407, a tunnel refused
        │       └── UntrustedCertificate    a certificate no trusted CA signed
        ├── PermanentJobError       wrong for one job: a 400, a blocked prompt
        └── RetryableError          may pass: 5xx, timeouts, dropped connections
            ├── RateLimitError      a 429: the model's lane pauses (or stops for the day)
            └── InvalidOutput       an answer that does not fit the run's output schema

The HTTP clients' exceptions (aiohttp's, httpx's) are translated into ``RetryableError`` in
``_wire.transport``, at the boundary; ``_wire.providers`` classifies every answer.
"""

from __future__ import annotations

import errno as _errno
import functools
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .completion import Completion

__all__ = [
    "BadOption",
    "BatcherError",
    "DamagedFile",
    "DirectoryLocked",
    "FatalProviderError",
    "InputError",
    "InputProblem",
    "InvalidOutput",
    "NetworkRefused",
    "Outage",
    "PermanentJobError",
    "ProviderError",
    "ProxyRefused",
    "QuotaExhausted",
    "RateLimitError",
    "RetryableError",
    "SchemaError",
    "StoreOutage",
    "TimedOut",
    "UntrustedCertificate",
    "UsageError",
    "WriteFailed",
]


class BatcherError(Exception):
    """The root of every error batcher raises on purpose."""


class UsageError(BatcherError):
    """Options that cannot work together or make no sense."""


class BadOption(UsageError):
    """A value an option cannot take. ``str()`` names the library's parameter (``option``); the
    CLI names its flag instead."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option} {reason}")
        self.option = option
        self.reason = reason


class SchemaError(UsageError):
    """An output schema that cannot be used: ``source`` is its file (or ``module:Model``),
    ``path`` the JSON path in it (empty for the whole), ``reason`` what is wrong."""

    def __init__(self, source: str, path: str, reason: str) -> None:
        where = f"{source} at {path}" if path else source
        super().__init__(f"schema {where}: {reason}")
        self.source = source
        self.path = path
        self.reason = reason


class DirectoryLocked(UsageError):
    """Another process runs in the output directory ``out``: ``pid`` and ``since`` (a wall-clock
    time) say who and since when, or are None if the holder had not written them yet."""

    def __init__(self, out: Path, pid: int | None, since: float | None) -> None:
        who = f"pid {pid}" if pid is not None else "pid unknown"
        if since is not None:
            who += f", since {datetime.fromtimestamp(since).strftime('%Y-%m-%d %H:%M:%S')}"
        super().__init__(
            f"{out} is in use by another batcher run ({who}); "
            "wait for it to finish or use another --out"
        )
        self.out = out
        self.pid = pid
        self.since = since


_IF_DELETED = {
    "ledger.json": "deleting it loses only today's request count (so the run may overspend today)",
    "run.json": "deleting it is safe: results are kept, and the next run writes it again",
}


class DamagedFile(UsageError):
    """A file batcher keeps in the output directory (``run.json``, ``ledger.json``) cannot be
    read; ``reason`` says why. Going on without it would be a guess, so the user decides."""

    def __init__(self, path: Path, reason: str) -> None:
        after = _IF_DELETED.get(path.name, "")
        super().__init__(
            f"{path} cannot be read ({reason}); fix it or delete it"
            + (f": {after}" if after else "")
        )
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class InputProblem:
    """One bad input: where it is (file and line or row), the job id if known, and what is wrong."""

    where: str
    message: str
    job_id: str | None = None

    def __str__(self) -> str:
        job = f" (job {self.job_id!r})" if self.job_id is not None else ""
        return f"{self.where}{job}: {self.message}"


class InputError(BatcherError):
    """Bad job input; carries every problem found (up to a cap) so a user can fix them at once."""

    def __init__(self, problems: list[InputProblem], *, more: int = 0) -> None:
        self.problems = problems
        self.more = more
        lines = [str(p) for p in problems]
        if more:
            lines.append(f"... and {more} more problem(s)")
        super().__init__("\n".join(lines))


_WHAT_TO_DO = {
    _errno.ENOSPC: "free some space",
    _errno.EDQUOT: "free some space (the disk quota is full)",
    _errno.EACCES: "fix its permissions",
    _errno.EPERM: "fix its permissions",
    _errno.EROFS: (
        "make the file system writable (or copy the directory to one that is, as a new --out)"
    ),
    _errno.EIO: "check the disk",
}


class WriteFailed(BatcherError):
    """A write under the output directory failed (no space, permission denied, read-only file
    system, I/O error). ``path`` is the file or folder, ``reason`` the system's words for it.
    Nothing written before is lost: once the cause is fixed, the same command goes on."""

    def __init__(self, path: Path, reason: str, *, errno: int | None = None) -> None:
        fix = _WHAT_TO_DO.get(errno or 0, "free space or fix permissions")
        super().__init__(
            f"could not write {path}: {reason}; {fix}, then rerun the same command: "
            "finished jobs are kept"
        )
        self.path = path
        self.reason = reason
        self.errno = errno

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled whole (a cluster's worker hands it to its driver)."""
        return (functools.partial(WriteFailed, errno=self.errno), (self.path, self.reason))

    @classmethod
    def from_os_error(cls, error: OSError, path: Path) -> WriteFailed:
        """The ``WriteFailed`` for ``error``, raised while writing ``path``."""
        return cls(path, error.strerror or str(error) or type(error).__name__, errno=error.errno)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Outage(BatcherError):
    """The endpoint stayed unreachable for ``lasted`` seconds, longer than the run waits for it;
    ``last_error`` is the last failure seen (a refused connection, a timeout, a 503)."""

    def __init__(self, endpoint: str, lasted: float, last_error: str) -> None:
        super().__init__(
            f"{endpoint} stayed unreachable for {_duration(lasted)} (last error: {last_error}); "
            "finished jobs are kept: rerun the same command when it is back"
        )
        self.endpoint = endpoint
        self.lasted = lasted
        self.last_error = last_error

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled whole (a cluster's worker hands it to its driver)."""
        return (Outage, (self.endpoint, self.lasted, self.last_error))


class StoreOutage(Outage):
    """The quota store (``store``, its URL without a password) stayed unreachable for ``lasted``
    seconds: lanes that cannot count their shared budget hold rather than overspend it, so the
    run ends as for an endpoint's outage (exit 75), finished jobs kept."""

    def __init__(self, store: str, lasted: float, last_error: str) -> None:
        super().__init__(store, lasted, last_error)
        BatcherError.__init__(
            self,
            f"the quota store at {store} is unreachable (for {_duration(lasted)}; last error: "
            f"{last_error}); finished jobs are kept: rerun the same command when it is back",
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (StoreOutage, (self.endpoint, self.lasted, self.last_error))


class ProviderError(BatcherError):
    """An answer from a provider that is not a usable completion."""

    kind: str = "provider"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body


class FatalProviderError(ProviderError):
    """Wrong for the whole run (bad key, unknown model): retrying or going on is pointless."""

    kind = "fatal"


class NetworkRefused(FatalProviderError):
    """What lies between batcher and the endpoint stops the run, not the endpoint: a proxy, or
    a certificate batcher cannot trust. The endpoint never saw the request, so nothing is said
    of the key; the network's settings need fixing (exit 78)."""


class UntrustedCertificate(NetworkRefused):
    """A TLS certificate no CA batcher trusts signed (``CERTIFICATE_VERIFY_FAILED``, a name that
    does not match): a proxy that inspects TLS, or a server with a private CA. Retrying cannot
    help; ``--ca-bundle`` or ``--system-trust`` can."""


class ProxyRefused(NetworkRefused):
    """The HTTP proxy between batcher and the endpoint refused the run: it wants credentials or
    refused them (407), or will not open a tunnel to the endpoint (a 4xx to ``CONNECT``). The
    endpoint never saw the request, so nothing is said of the key; ``proxy`` is the proxy's URL
    without its credentials, when known. The network's settings need fixing (exit 78)."""

    def __init__(
        self,
        message: str,
        *,
        proxy: str | None = None,
        status: int | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(message, status=status, body=body)
        self.proxy = proxy


class PermanentJobError(ProviderError):
    """Wrong for this one job (a 400, a blocked prompt): recorded as its result, not retried."""

    kind = "permanent"


class RetryableError(ProviderError):
    """May pass on a later attempt; ``retry_after`` is the server's own delay in seconds.

    ``unanswered`` says that no answer came (a refused or dropped connection, a timeout, a 5xx,
    a gateway's page in place of one): only such failures, several in a row, make an outage. By
    default it follows the status; an answer that came and would not do (a 429, an output that
    does not fit the schema) is evidence that the endpoint is up, whatever it says.
    ``counted`` is False for a failure during an outage: the endpoint's, not the job's, so it
    uses up none of the job's attempts."""

    kind = "retryable"
    counted: bool = True

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: str | None = None,
        retry_after: float | None = None,
        unanswered: bool | None = None,
    ) -> None:
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after
        self.unanswered = (status is None or status >= 500) if unanswered is None else unanswered


class TimedOut(RetryableError):
    """No answer within ``--timeout`` after the request left: the provider may still have
    finished it, and billed it, so it counts toward the job's attempts even during an outage
    (``counted`` stays True). A connect timeout, which sent nothing, is a plain
    ``RetryableError``."""

    kind = "timeout"


class RateLimitError(RetryableError):
    """A 429. ``scope`` is what ran out (``requests``, ``tokens`` or None if unsaid), ``quota`` the
    provider's name for the quota, and ``per_day`` whether waiting for minutes is pointless."""

    kind = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 429,
        body: str | None = None,
        retry_after: float | None = None,
        scope: str | None = None,
        quota: str | None = None,
        per_day: bool = False,
    ) -> None:
        super().__init__(
            message, status=status, body=body, retry_after=retry_after, unanswered=False
        )
        self.scope = scope
        self.quota = quota
        self.per_day = per_day


class InvalidOutput(RetryableError):
    """An answer that is cut off, not JSON, or does not fit the run's output schema; the message
    names the field path and the reason. Retried at once (another answer may fit), within the
    job's attempts: an answer came, so it never counts toward an outage however many fail in a
    row. ``answer`` is the completion, whose raw text and token counts the row keeps when
    attempts run out."""

    kind = "invalid_output"

    def __init__(self, message: str, *, answer: Completion | None = None) -> None:
        super().__init__(message, status=200, retry_after=0.0, unanswered=False)
        self.answer = answer


class QuotaExhausted(BatcherError):
    """A model's daily quota is spent (counted here, or said by the server) until ``resets_at``."""

    def __init__(self, model: str, why: str, resets_at: float) -> None:
        from datetime import datetime

        from .clock import QUOTA_TZ

        when = datetime.fromtimestamp(resets_at, QUOTA_TZ).strftime("%Y-%m-%d %H:%M %Z")
        super().__init__(f"{model}: {why}; the quota resets at {when}")
        self.model = model
        self.why = why
        self.resets_at = resets_at
