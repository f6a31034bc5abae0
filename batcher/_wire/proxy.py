"""Real networks: which proxy a request goes through, and which certificates its TLS trusts.

Both clients (the lean one and aiohttp), and the ``urllib`` opener that downloads image URLs
(``url_opener``), take their proxy and their ``ssl.SSLContext`` from here, so they never
disagree. Proxies come from ``--proxy``, else from the environment as curl reads it
(``https_proxy``, ``http_proxy``, ``all_proxy``, ``no_proxy``, lower- or upper-case, through
``urllib.request.getproxies``, https://docs.python.org/3/library/urllib.request.html#urllib.request.getproxies);
``no_proxy`` is honoured either way, as curl does: host names, domain suffixes (``.example.com``
or ``example.com``), ``host:port``, ``*``, and CIDR blocks (``10.0.0.0/8``) for IP literals.

Only ``http://`` proxies are spoken: plain HTTP is sent to them in absolute form, HTTPS through a
``CONNECT`` tunnel (RFC 9110 9.3.6, https://www.rfc-editor.org/rfc/rfc9110#section-9.3.6). A
proxy's credentials (``http://user:pass@host:port``) become ``Proxy-Authorization: Basic``
(RFC 9110 11.7.1) and are kept out of every repr and message: a proxy is named by ``Proxy.url``.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import ssl
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from .._core.errors import ProxyRefused, UntrustedCertificate, UsageError

__all__ = [
    "Proxies",
    "Proxy",
    "proxy_refused",
    "ssl_context",
    "untrusted_certificate",
    "url_opener",
]


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy: where it listens, and the ``Proxy-Authorization`` value if it needs one."""

    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The proxy's URL without its credentials: the only way it is ever named."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def parse(cls, url: str, source: str) -> Proxy:
        """A proxy URL (``http://[user:pass@]host[:port]``, or a bare ``host:port``, as curl
        takes it); ``UsageError`` naming ``source`` (never the URL: it may hold a password)."""
        if "://" not in url:
            url = "http://" + url
        try:
            parts = urlsplit(url)
            port = parts.port or 80
        except ValueError:
            raise UsageError(f"{source} is not a proxy URL") from None
        if parts.scheme != "http" or not parts.hostname:
            raise UsageError(
                f"{source} must be an http:// proxy (HTTPS goes through it in a CONNECT tunnel); "
                f"{parts.scheme}:// proxies are not supported"
            )
        user = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password or "") if user is not None else None
        auth = None
        if user is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            auth = f"Basic {token}"
        return cls(parts.hostname, port, auth)


class Proxies:
    """Which proxy, if any, a URL is fetched through: ``proxy`` (``--proxy``) for every URL,
    else the environment's for the URL's scheme (``all_proxy`` for any); none when
    ``use_env`` is False (``--no-proxy``) and no proxy is given, or when ``no_proxy`` says so."""

    def __init__(self, proxy: str | None = None, *, use_env: bool = True) -> None:
        env = urllib.request.getproxies() if use_env else {}
        self._no = env.get("no", "")
        self._explicit = Proxy.parse(proxy, "--proxy") if proxy else None
        self._by_scheme: dict[str, Proxy] = {}
        self._cache: dict[tuple[str, str, int], Proxy | None] = {}
        if self._explicit is None:
            for scheme in ("http", "https", "all"):
                if env.get(scheme):
                    self._by_scheme[scheme] = Proxy.parse(env[scheme], f"${scheme}_proxy")

    def __bool__(self) -> bool:
        return self._explicit is not None or bool(self._by_scheme)

    def for_url(self, url: str) -> Proxy | None:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        return self.lookup(parts.scheme, parts.hostname or "", parts.port or (443 if tls else 80))

    def lookup(self, scheme: str, host: str, port: int) -> Proxy | None:
        key = (scheme, host, port)
        if key not in self._cache:  # a run talks to a host or two: decided once each
            proxy = self._explicit or self._by_scheme.get(scheme) or self._by_scheme.get("all")
            if proxy is not None and _bypass(host, port, self._no):
                proxy = None
            self._cache[key] = proxy
        return self._cache[key]


_REFUSALS = {
    403: "403 Forbidden: its rules do not let us through to there",
    405: "405 Method Not Allowed: it does not open tunnels",
}


def proxy_refused(proxy: Proxy | None, status: int, where: str | None = None) -> ProxyRefused:
    """The error for a proxy that answered ``status`` (a 407, or a 4xx to ``CONNECT``) on the way
    to ``where``: named by its URL without credentials, with what to fix."""
    who = f"the proxy {proxy.url}" if proxy is not None else "an HTTP proxy on the way"
    if status == 407:
        why = (
            "407: it refused the credentials in the proxy's URL"
            if proxy is not None and proxy.authorization
            else "407: it wants credentials, given in the proxy's URL as http://USER:PASS@HOST:PORT"
        )
    else:
        why = _REFUSALS.get(status, f"{status}")
    to = f" to {where}" if where else ""
    return ProxyRefused(
        f"{who} refused to carry requests{to} ({why}); the endpoint never saw them, so the API "
        "key is not in question: fix --proxy (or $https_proxy, $http_proxy, $no_proxy), or go "
        "direct with --no-proxy",
        proxy=proxy.url if proxy is not None else None,
        status=status,
    )


def untrusted_certificate(host: str, port: int, error: BaseException) -> UntrustedCertificate:
    """The error for a TLS certificate of ``host:port`` that does not verify (``error``, an
    ``ssl.SSLCertVerificationError``: OpenSSL's reason, such as ``CERTIFICATE_VERIFY_FAILED``
    and why): the run stops, since retrying cannot make it trusted, saying what would."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return UntrustedCertificate(
        f"the TLS certificate presented for {where} is not trusted ({error}); the endpoint never "
        "saw the request, so the API key is not in question. A proxy that inspects TLS, or a "
        "server with a private CA, shows a certificate of its own CA: trust that CA with "
        "--ca-bundle FILE (or $SSL_CERT_FILE), or the operating system's store, where a company "
        "installs it, with --system-trust"
    )


def _bypass(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``no_proxy`` names the host: urllib's own matching (names, suffixes, host:port,
    ``*``; on macOS and Windows the system's exceptions too), plus CIDR blocks for IP literals,
    which urllib does not read."""
    name = f"[{host}]" if ":" in host else host
    if urllib.request.proxy_bypass(f"{name}:{port}"):  # the environment's no_proxy (or the OS's)
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for entry in no_proxy.split(","):
        entry = entry.strip()
        if "/" in entry:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def ssl_context(ca_bundle: str | None = None, *, system: bool = False) -> ssl.SSLContext | None:
    """The TLS context both clients verify servers with: only the certificates in ``ca_bundle``
    (``--ca-bundle``), else in ``$SSL_CERT_FILE`` (as OpenSSL and curl read it: a private CA, a
    corporate proxy's); None for each client's default (the system's trust store), made only
    when a TLS connection needs it. ``UsageError`` if the file cannot be read.

    ``system`` (``--system-trust``): a ``truststore.SSLContext``, which hands each server's chain
    to the operating system's own verifier (Keychain on macOS, CryptoAPI on Windows, OpenSSL's
    default paths on Linux), so a CA a company installed through its device management is
    trusted; the file's CAs, if any, are trusted as well, not instead (truststore's macOS and
    Windows verifiers take what ``load_verify_locations`` loaded as extra anchors, its Linux one
    is OpenSSL with both: truststore/_macos.py, _windows.py, _openssl.py in
    https://github.com/sethmlarson/truststore)."""
    source = "--ca-bundle" if ca_bundle else "$SSL_CERT_FILE"
    path = ca_bundle or os.environ.get("SSL_CERT_FILE") or None
    if path is None and not system:
        return None
    try:
        if not system:
            return ssl.create_default_context(cafile=path)
        import truststore  # only for runs that ask for it: it imports the OS's TLS bindings

        context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if path is not None:
            context.load_verify_locations(cafile=path)
        return context
    except (OSError, ssl.SSLError) as e:
        raise UsageError(f"{source} {path}: not a readable PEM certificate bundle ({e})") from None


def url_opener(
    proxies: Proxies | None, context: ssl.SSLContext | None
) -> urllib.request.OpenerDirector:
    """A ``urllib`` opener for the image URLs a run downloads (images answered as URLs, and jobs'
    images for Gemini), going where its requests go: through the proxy ``proxies`` names for each
    URL, a redirect's too (never urllib's own pick from the environment), trusting ``context``'s
    CAs (None: the system's). http:// and https:// only: no ``file:``, ``ftp:`` or ``data:``."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        _Route(proxies),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(context=context),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
        urllib.request.UnknownHandler(),
    ):
        opener.add_handler(handler)
    return opener


class _Route(urllib.request.BaseHandler):
    """Points each request at its proxy, if any: plain HTTP in absolute form, HTTPS through a
    ``CONNECT`` tunnel, the credentials as ``Proxy-Authorization``, which urllib puts on the
    ``CONNECT`` only (and a redirect does not carry to another host: it is decided again)."""

    handler_order = 100  # before HTTPHandler sets the Host header from the request's host

    def __init__(self, proxies: Proxies | None) -> None:
        self._proxies = proxies

    def http_request(self, request: urllib.request.Request) -> urllib.request.Request:
        proxy = self._proxies.for_url(request.full_url) if self._proxies else None
        if proxy is not None:
            host = f"[{proxy.host}]" if ":" in proxy.host else proxy.host
            request.set_proxy(f"{host}:{proxy.port}", "http")
            if proxy.authorization:
                request.add_unredirected_header("Proxy-authorization", proxy.authorization)
        return request

    https_request = http_request
