"""Everything a run can be told: ``RunOptions``, composed of small groups, one definition each.

Each option is a field of one group, and its field carries the CLI flag's metadata
(``flag(...)``). The groups of where requests go, how they are sent and what to send again are
here; the limits and quotas are in ``quota_options``, costs and the batch APIs in
``cost_options``, images in ``media_options``, how to read columns in ``_jobs``. The CLI builds
its flags from these fields and the library takes the same names as keywords, so a new option is
one field (plus the code that uses it). A bad value raises ``BadOption`` naming the parameter;
the CLI rewrites that name as its flag.
"""

from __future__ import annotations

import difflib
import math
import resource
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Unpack

from .._core.errors import BadOption, UsageError
from .._core.flag import duration, flag
from .._jobs import ColumnOptions, ProviderName
from .cost_options import BatchOptions, CostOptions
from .media_options import MediaOptions
from .quota_options import LimitOptions, PoolOptions

if TYPE_CHECKING:
    from ..mock import MockConfig
    from .keywords import RunKeywords

__all__ = [
    "EndpointOptions",
    "RequestOptions",
    "ResumeOptions",
    "RunOptions",
    "option_flag",
]


def option_flag(option: str) -> str:
    """The CLI flag of a library parameter (``max_concurrency`` -> ``--max-concurrency``)."""
    for group in _GROUPS.values():
        for f in fields(group):
            if f.name == option and f.metadata:
                return str(f.metadata.get("name") or "--" + f.name.replace("_", "-"))
    return option


MAX_CONCURRENCY = 10_000
"""More requests in flight than this is a typo, not a plan (each is a task and a connection)."""

UNPACED = 16
"""Requests in flight for a lane that no known limit paces, unless ``--max-concurrency`` says."""
MAX_IN_FLIGHT = MAX_CONCURRENCY
"""The most requests in flight without ``--max-concurrency`` (each is a socket and a task)."""
_FDS_KEPT = 256
"""File descriptors left for everything but the requests' sockets (files, the journal...)."""


def concurrency_ceiling(explicit: int | None) -> int:
    """The most requests in flight: ``explicit`` (``--max-concurrency``) if given, else
    ``MAX_IN_FLIGHT`` within the process's file descriptors. The soft limit on those is raised
    to the hard one where that is needed (1,024 is a common soft limit; a socket each)."""
    if explicit is not None:
        return explicit
    want = MAX_IN_FLIGHT + _FDS_KEPT
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < want:
            raised = want if hard == resource.RLIM_INFINITY else min(hard, want)
            if raised > soft:
                resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
                soft = raised
    except (OSError, ValueError):  # not permitted here: keep within what we have
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_IN_FLIGHT
    return max(UNPACED, min(MAX_IN_FLIGHT, soft - _FDS_KEPT))


def _check_url(url: str) -> None:
    """An http(s) URL with a host and a valid port, and nothing batcher would not send: no
    credentials, query string or fragment (requests go to paths under it, which carry none of
    them); else ``BadOption`` saying what is wrong, never showing what may be a secret."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if "@" in parts.netloc:  # before anything shows the URL: it holds a password
            raise BadOption(
                "base_url",
                "holds credentials (USER:PASS@), which batcher never sends: the key comes from "
                "the environment (or --api-key-env)",
            )
        port = parts.port
    except ValueError as e:
        raise BadOption("base_url", f"{url!r} is not a URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadOption("base_url", f"{url!r} is not an http(s) URL with a host")
    del port
    shown = urlunsplit(parts._replace(query="", fragment=""))
    if "?" in url:  # its value is not shown: it may hold a key (Gemini takes ?key=)
        raise BadOption(
            "base_url",
            f"{shown!r} has a query string (?...): requests go to paths under the base URL, "
            "and the batch APIs add queries of their own, so it would not reach the server; "
            "drop it (a key comes from the environment, or --api-key-env)",
        )
    if "#" in url:
        raise BadOption("base_url", f"{shown!r} has a fragment (#...), which is never sent")


def _positive(option: str, value: float) -> None:
    if value < 1:
        raise BadOption(option, "must be at least 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointOptions:
    """Where requests go and with which key."""

    provider: ProviderName = field(
        default="openai",
        metadata=flag(
            "wire format: OpenAI chat/completions (default) or Gemini generateContent",
            choices=("openai", "gemini"),
        ),
    )
    base_url: str | None = field(
        default=None,
        metadata=flag("API base URL (default: the provider's public URL)", metavar="URL"),
    )
    api_key: str | None = field(default=None, repr=False)
    """The key itself, for library callers; the CLI reads keys from the environment only."""
    api_key_env: str | None = field(
        default=None,
        metadata=flag(
            "environment variable holding the key (default: OPENAI_API_KEY, or "
            "GEMINI_API_KEY then GOOGLE_API_KEY)",
            metavar="VAR",
        ),
    )
    mock: str | MockConfig | None = field(
        default=None,
        metadata=flag(
            "run against the embedded mock provider (presets: default, instant, realistic, "
            "faulty, or a tier name to enforce its limits); no key needed",
            metavar="PRESET",
            const="default",
        ),
    )
    """Run against the embedded mock provider with this preset (``"default"``, or a tier's name),
    or a library caller's ``MockConfig``, instead of the network."""

    def __post_init__(self) -> None:
        if self.provider not in ("openai", "gemini"):
            raise BadOption("provider", f"{self.provider!r} is unknown; choose openai or gemini")
        if self.base_url is not None:
            _check_url(self.base_url)
        if self.mock is not None and self.base_url is not None:
            raise UsageError(
                f"{option_flag('mock')} and {option_flag('base_url')} cannot be used together"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestOptions:
    """How each job is sent: its default model, concurrency, attempts and time limits."""

    model: str | None = field(
        default=None, metadata=flag("model for jobs that do not name their own", metavar="NAME")
    )
    max_concurrency: int | None = field(
        default=None,
        metadata=flag(
            "requests in flight at most (default: as many as the limits' rate times the "
            "answers' times needs, up to 10,000 and the open-file limit; 16 where no limit is "
            "known)",
            metavar="N",
        ),
    )
    max_attempts: int = field(
        default=5,
        metadata=flag("attempts per job for retryable errors (default 5)", metavar="N"),
    )
    timeout: float = field(
        default=600.0,
        metadata=flag(
            "seconds to wait for an answer (default 600, as OpenAI's SDK); an answer is not "
            "streamed, so a longer generation times out, and a timed-out request may still be "
            "billed",
            metavar="SECONDS",
        ),
    )
    max_outage: float = field(
        default=1800.0,
        metadata=flag(
            "how long the endpoint (or the quota store) may stay unreachable before the run "
            "stops with exit 75 (default 30m); meanwhile it is probed and no job spends "
            "attempts (but on a timeout)",
            metavar="DURATION",
            parse=duration,
        ),
    )
    """Seconds the endpoint (or the quota store) may stay unreachable before the run stops."""
    request_deadline: float | None = field(
        default=None,
        metadata=flag(
            "the most one request may take, first byte sent to last byte answered, however "
            "steadily the answer trickles in (default twice --timeout)",
            metavar="DURATION",
            parse=duration,
        ),
    )
    """The most one request may take in all; None: twice ``timeout``. ``timeout`` bounds each
    silence, so a server sending a byte per interval would hold a request forever without it.
    Twice, because an honest answer is silence while it is generated (up to ``timeout``), then
    its body, which may be large (images): a whole ``timeout`` more for the body to arrive."""
    proxy: str | None = field(
        default=None,
        repr=False,  # it may hold the proxy's password
        metadata=flag(
            "send through this HTTP proxy, http://[USER:PASS@]HOST:PORT (default: "
            "$https_proxy / $http_proxy / $all_proxy; $no_proxy is honoured either way)",
            metavar="URL",
        ),
    )
    no_proxy: bool = field(
        default=False,
        metadata=flag("ignore the proxies named in the environment (go direct)"),
    )
    ca_bundle: str | None = field(
        default=None,
        metadata=flag(
            "trust only the CA certificates in this PEM file for TLS (default: $SSL_CERT_FILE, "
            "else the system's); with --system-trust, these as well as the system's",
            metavar="FILE",
        ),
    )
    system_trust: bool = field(
        default=False,
        metadata=flag(
            "verify TLS with the operating system's trust store (macOS Keychain, Windows "
            "certificate store, Linux's OpenSSL bundle), where a company installs its own CAs"
        ),
    )
    """Verify servers through ``truststore`` (the OS's own verifier) instead of OpenSSL's
    bundle. With ``ca_bundle`` (or ``$SSL_CERT_FILE``) the file's CAs are trusted as well."""
    grace: float = 5.0
    """Seconds in-flight requests get to finish after a stop (SIGINT / SIGTERM)."""
    ray: str | None = field(
        default=None,
        metadata=flag(
            "run on a Ray cluster: 'local' starts one on this machine, else the ADDRESS of one "
            "(needs batcher[ray]; --max-concurrency is then per worker)",
            metavar="local|ADDRESS",
        ),
    )
    """Run on a Ray cluster (``"local"``, or a cluster's address) instead of in this process."""
    schema: Any = field(
        default=None,
        metadata=flag(
            "answer in JSON fitting this schema: a JSON Schema file, or a pydantic model as "
            "package.module:Model; answers are validated (invalid ones retried) and stored typed "
            "in the column 'parsed'",
            metavar="SCHEMA",
        ),
    )
    """The output schema: a JSON Schema file's path or dict, a pydantic model class, or
    ``"package.module:Model"`` (see ``_config.schema.load_schema``)."""

    def __post_init__(self) -> None:
        if self.max_concurrency is not None:
            _positive("max_concurrency", self.max_concurrency)
        if self.max_concurrency is not None and self.max_concurrency > MAX_CONCURRENCY:
            raise BadOption("max_concurrency", f"must be at most {MAX_CONCURRENCY:,}")
        _positive("max_attempts", self.max_attempts)
        if not 0 < self.timeout < math.inf:
            raise BadOption("timeout", "must be a positive number of seconds")
        if not 0 <= self.grace < math.inf:
            raise BadOption("grace", "must be a number of seconds, not negative")
        if not 0 < self.max_outage < math.inf:
            raise BadOption("max_outage", "must be a positive duration")
        if self.request_deadline is not None and not 0 < self.request_deadline < math.inf:
            raise BadOption("request_deadline", "must be a positive duration")
        if self.proxy is not None and self.no_proxy:
            raise UsageError(
                f"{option_flag('proxy')} and {option_flag('no_proxy')} cannot be used together"
            )
        if self.ray is not None and not self.ray.strip():
            raise BadOption("ray", "takes local or a cluster's address")


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeOptions:
    """Which finished jobs to send again."""

    retry_errors: bool = field(
        default=False,
        metadata=flag("send jobs that ended in error again (their rows are replaced)"),
    )
    """Send jobs that ended in error again; their old rows are replaced."""
    redo_changed: bool = field(
        default=False, metadata=flag("send finished jobs whose request changed since again")
    )
    """Send again finished jobs whose request changed since; otherwise their old results stay."""

    def flags(self) -> str:
        """The flags in force, for messages."""
        on = [option_flag(f.name) for f in fields(self) if getattr(self, f.name)]
        return " and ".join(on)


_GROUPS: dict[str, Any] = {
    "endpoint": EndpointOptions,
    "requests": RequestOptions,
    "limits": LimitOptions,
    "resume": ResumeOptions,
    "columns": ColumnOptions,
    "costs": CostOptions,
    "batch": BatchOptions,
    "media": MediaOptions,
    "pool": PoolOptions,
}
_GROUP_OF: dict[str, str] = {
    f.name: group for group, cls in _GROUPS.items() for f in fields(cls) if f.init
}


@dataclass(frozen=True, slots=True, init=False)
class RunOptions:
    """Everything a run can be told, in groups. Build it from the groups or from flat keywords
    (``RunOptions(model="m", rpm=60)``, the keywords ``batcher.run`` takes); both are checked."""

    endpoint: EndpointOptions
    requests: RequestOptions
    limits: LimitOptions
    resume: ResumeOptions
    columns: ColumnOptions
    costs: CostOptions
    batch: BatchOptions
    media: MediaOptions
    pool: PoolOptions

    GROUPS: ClassVar[tuple[str, ...]] = tuple(_GROUPS)

    def __init__(self, **options: Unpack[RunKeywords]) -> None:
        by_group: dict[str, dict[str, Any]] = {g: {} for g in _GROUPS}
        for name, value in options.items():
            if name in _GROUPS:
                continue
            group = _GROUP_OF.get(name)
            if group is None:
                close = difflib.get_close_matches(name, _GROUP_OF, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise TypeError(f"unknown option {name!r}{hint}")
            by_group[group][name] = value
        for group, cls in _GROUPS.items():
            given: Any = options.get(group)
            if given is not None and not isinstance(given, cls):
                names = ", ".join(f.name for f in fields(cls) if f.init)
                raise TypeError(
                    f"{group}= takes a batcher.{cls.__name__}, not {type(given).__name__}; "
                    f"or give its options as keywords: {names}"
                )
            if given is not None and by_group[group]:
                raise TypeError(f"give {group} as a group or as keywords, not both")
            object.__setattr__(self, group, given or cls(**by_group[group]))

    def flat(self) -> dict[str, Any]:
        """The options as flat keywords (the inverse of the constructor)."""
        return {
            f.name: getattr(getattr(self, g), f.name)
            for g in _GROUPS
            for f in fields(getattr(self, g))
            if f.init
        }
