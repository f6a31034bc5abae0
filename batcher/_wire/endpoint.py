"""Where a run's requests go: the base URL, the key and where it came from, the transport, and
the embedded mock provider when the run asks for one (started here and nowhere else).

The key is never logged or written: ``redact`` replaces it in anything a server echoes back.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, overload
from urllib.parse import quote, urlsplit, urlunsplit

from .._config.options import EndpointOptions, RequestOptions, concurrency_ceiling, option_flag
from .._core.errors import UsageError
from .http1 import Http1Transport
from .httpx_transport import HttpxTransport
from .providers import Provider
from .proxy import Proxies, Proxy, ssl_context, url_opener
from .transport import Transport

if TYPE_CHECKING:
    import urllib.request

    import httpx

    from ..mock import MockConfig, MockServer

__all__ = ["Target", "resolve_key"]

MOCK_KEY = "mock-key"
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")  # a % that starts no escape: itself, %25
REDACTED_KEY_LENGTH = 8
"""The shortest key ``redact`` replaces: a shorter one (a test's ``k``) is no secret, and replacing
it would mangle every answer holding its letters; providers' keys run to 39 characters and more."""


def resolve_key(endpoint: EndpointOptions, provider: Provider) -> tuple[str, str]:
    """The API key and where it came from (for messages)."""
    if endpoint.api_key:
        return endpoint.api_key, "the api_key option"
    names = (endpoint.api_key_env,) if endpoint.api_key_env else provider.key_envs
    for name in names:
        if os.environ.get(name):
            return os.environ[name], f"${name}"
    if endpoint.mock is not None:
        return MOCK_KEY, "the mock's key"
    hint = (
        ""
        if endpoint.api_key_env
        else f" (or name another variable with {option_flag('api_key_env')})"
    )
    raise UsageError(f"no API key: set {' or '.join(names)} in the environment{hint}")


class Target:
    """The endpoint of one run. ``start`` brings up the embedded mock provider if there is one."""

    def __init__(self, endpoint: EndpointOptions, provider: Provider) -> None:
        self.provider = provider
        self.key, self.key_source = resolve_key(endpoint, provider)
        self.base_url = _quote_path((endpoint.base_url or provider.default_base_url).rstrip("/"))
        self._mock_config = _mock_config(endpoint.mock) if endpoint.mock is not None else None
        self._mock: MockServer | None = None
        self.loopback_mock = False
        """The endpoint is an embedded mock another process of this machine started (a cluster
        driver's, reached from its workers): like ``is_mock``, never sent through the
        environment's proxy, which could not reach its loopback."""
        self.proxy: Proxy | None = None
        """The proxy requests to the endpoint go through, once ``transport`` has chosen it."""
        self.opener: urllib.request.OpenerDirector | None = None
        """How image URLs are downloaded (``media.fetch``), once ``transport`` has chosen the
        run's proxies and CAs: through them too."""

    @property
    def is_mock(self) -> bool:
        return self._mock_config is not None

    @property
    def where(self) -> str:
        """The endpoint in words, for messages."""
        return "the mock provider" if self.is_mock else self.base_url

    def start(self) -> None:
        """Start the embedded mock provider, if this run uses one, and point the URL at it."""
        if self._mock_config is not None and self._mock is None:
            from ..mock import MockServer

            self._mock = MockServer(self._mock_config).start()
            self.base_url = self._mock.base_url(self.provider.name)

    def stop(self) -> None:
        if self._mock is not None:
            self._mock.stop()
            self._mock = None

    def transport(
        self, requests: RequestOptions, httpx_transport: httpx.AsyncBaseTransport | None = None
    ) -> Transport:
        """How requests reach this endpoint, with its auth, timeouts and connection limits:
        the lean HTTP/1.1 client (aiohttp for the batch APIs' other calls), or httpx over a
        transport the caller gave (``httpx.MockTransport`` in tests). Both of the former, and
        ``opener`` for image URLs, go through the same proxy and trust the same CAs
        (``proxy.Proxies``, ``proxy.ssl_context``); the embedded mock, on this machine's
        loopback, is not sent through the environment's proxy (which could not reach it)."""
        options: dict[str, Any] = {
            "max_connections": concurrency_ceiling(requests.max_concurrency),
            "timeout": requests.timeout,
            "connect_timeout": min(requests.timeout, 30.0),
        }
        mock = self.is_mock or self.loopback_mock
        found = Proxies(requests.proxy, use_env=not (requests.no_proxy or mock))
        proxies = found if found else None
        context = ssl_context(requests.ca_bundle, system=requests.system_trust)
        self.proxy = proxies.for_url(self.base_url) if proxies else None
        self.opener = url_opener(proxies, context)
        headers = self.provider.auth_headers(self.key)
        if httpx_transport is not None:
            return HttpxTransport(self.base_url, headers, transport=httpx_transport, **options)
        return Http1Transport(
            self.base_url,
            headers,
            ssl_context=context,
            proxies=proxies,
            deadline=requests.request_deadline,
            **options,
        )

    @overload
    def redact(self, text: str) -> str: ...
    @overload
    def redact(self, text: None) -> None: ...
    def redact(self, text: str | None) -> str | None:
        """The key, should a server echo it back, never reaches results, logs or errors (a key
        shorter than ``REDACTED_KEY_LENGTH`` is left: it would be found inside ordinary words)."""
        if text is None or len(self.key) < REDACTED_KEY_LENGTH:
            return text
        return text.replace(self.key, "[API key]")


def _quote_path(url: str) -> str:
    """``url`` with its path percent-encoded where RFC 3986 3.3 wants it (``/a b`` ->
    ``/a%20b``, UTF-8 for other letters), the escapes it holds kept; both clients send it as
    it is. (``_check_url`` has refused a query, a fragment and credentials.)"""
    parts = urlsplit(url)
    path = _LONE_PERCENT.sub("%25", parts.path)
    return urlunsplit(parts._replace(path=quote(path, safe="/%:@!$&'()*+,;=~")))


def _mock_config(mock: str | Any) -> MockConfig:
    """A preset's name (or a tier's), or a ``MockConfig`` given by a library caller."""
    from ..mock import MockConfig, preset

    if isinstance(mock, MockConfig):
        return mock
    return preset(str(mock))
