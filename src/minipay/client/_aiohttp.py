"""``AiohttpTransport``: the async client's network transport, httpx2's interface over aiohttp's HTTP/1.1.

:class:`~minipay.AsyncClient` speaks httpx2 (its requests, responses, errors and injectable
transports are httpx2's); only the bytes on the wire go through aiohttp when no transport is
injected. Measured on one core against a bare local server, 16 requests in flight: httpx2's own
connection pool (httpcore2 on anyio) costs about 510 µs of CPU per request, this transport under
the same httpx2 client about 230 µs; for a service that calls WeChat on every payment, that is
about a tenth of its CPU per payment. The pool checks every idle connection with a ``poll()`` on
every request and goes through anyio's cancel scopes at each read and write; aiohttp's pool is told
of a closed connection by the event loop instead.

What stays as it was with httpx2's own transport:

- one send per attempt: aiohttp's resend of an idempotent request whose kept-alive connection
  turned out to be closed is switched off (the SDK decides about retries, and a login code is
  single use);
- errors are httpx2's, with the same meaning for the SDK: :class:`httpx2.ConnectError` /
  :class:`httpx2.ConnectTimeout` only when nothing was sent; a failure after the request may
  have gone out is a read error or a protocol error (the outcome is unknown);
- timeouts are the request's httpx2 timeouts (connect, pool, read);
- the body is returned as sent: httpx2 decodes any ``Content-Encoding`` itself;
- proxies from ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` (read when the transport is made, as
  httpx2 does) and ``NO_PROXY`` (read at the first request to each host); aiohttp's own
  ``trust_env`` would read them, and ``~/.netrc``, in a thread on every request;
- HTTP/1.1, at most 100 connections; cookies only in httpx2's jar.

One difference remains: httpcore2 polls an idle connection's socket before reusing it, aiohttp
learns that the server closed it when the event loop handles the close. A request sent on a
connection whose close is still on its way fails with a read or protocol error (for the SDK: sent,
outcome unknown; the service then queries the order) where httpcore2 would have opened a new
connection. Idle connections are dropped after 4 s, before servers that close them after 5 s
(uvicorn's default) can; a server that closes a connection right after an answer without saying
``Connection: close`` will see this now and then.

It needs asyncio (the service, and any ``asyncio.run``). Under another event loop, give the client
httpx2's own transport: ``AsyncClient(..., transport=httpx2.AsyncHTTPTransport(verify=...))``.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from typing import Any

import aiohttp
import httpx2
from yarl import URL

from minipay.protocol import ConfigurationError

__all__ = ["AiohttpTransport"]

#: httpx2's pool size (``httpx2.Limits()``).
_MAX_CONNECTIONS = 100
#: A second under the 5 s after which many servers (uvicorn's default) close an idle connection:
#: a connection is dropped here before the server can close it under a new request.
_KEEPALIVE_EXPIRY = 4.0
#: Request headers aiohttp must not see: it frames the body it is given itself.
_FRAMING = frozenset({b"transfer-encoding", b"content-length"})


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport that sends over an aiohttp session (created on first use, in the running
    loop; closed by :meth:`aclose`, which ``httpx2.AsyncClient.aclose`` calls)."""

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proxies = _environment_proxies()
        self._proxy_cache: dict[tuple[str, str], str | None] = {}
        if "_retry_connection" not in aiohttp.ClientSession.ATTRS:  # aiohttp < 3.11: see _session_for
            raise ConfigurationError(f"aiohttp {aiohttp.__version__} resends requests on its own: 3.11 or later needed")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(open={self._session is not None and not self._session.closed})"

    def _session_for(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        if self._session is not None and not self._session.closed:
            if self._loop is not loop:
                raise RuntimeError("this client's connections belong to another event loop: use one client per loop")
            return self._session
        connector = aiohttp.TCPConnector(ssl=self._ssl, limit=_MAX_CONNECTIONS, keepalive_timeout=_KEEPALIVE_EXPIRY)
        session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # cookies are httpx2's business (the client's jar)
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        # aiohttp sends an idempotent request (the login GET) again, once, when the kept-alive
        # connection it used proves closed; the SDK counts and decides every attempt itself.
        session._retry_connection = False
        self._session, self._loop = session, loop
        return session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "AsyncClient's default transport runs on asyncio: under another event loop pass "
                "transport=httpx2.AsyncHTTPTransport(verify=...)"
            ) from None
        session = self._session_for(loop)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        connect, pool = timeouts.get("connect"), timeouts.get("pool")
        timeout = aiohttp.ClientTimeout(
            total=None,
            # aiohttp's ``connect`` covers the wait for a pooled connection as well as making one.
            connect=None if connect is None and pool is None else (connect or 0.0) + (pool or 0.0),
            sock_connect=connect,
            sock_read=timeouts.get("read"),
        )
        body = await request.aread()
        # As httpx2 encoded it (no second quoting); credentials in the URL are already httpx2's
        # Authorization header. Header names keep their case; aiohttp frames the body itself.
        url = URL(str(request.url), encoded=True).with_user(None)
        raw = request.headers.raw
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw if k.lower() not in _FRAMING]
        try:
            async with session.request(
                request.method,
                url,
                data=body if body or request.method not in ("GET", "HEAD") else None,
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
                proxy=self._proxy_for(request.url),
            ) as answer:
                content = await answer.read()
                version = f"HTTP/{answer.version.major}.{answer.version.minor}" if answer.version else "HTTP/1.1"
                return httpx2.Response(
                    answer.status,
                    headers=list(answer.raw_headers),
                    stream=httpx2.ByteStream(content),  # httpx2 decodes any Content-Encoding as it reads
                    extensions={"http_version": version.encode(), "reason_phrase": (answer.reason or "").encode()},
                )
        except aiohttp.ClientError as exc:
            raise _httpx_error(exc, request) from exc
        except TimeoutError as exc:
            raise httpx2.ReadTimeout(f"{type(exc).__name__}", request=request) from exc

    def _proxy_for(self, url: httpx2.URL) -> str | None:
        key = (url.scheme, url.host)
        if key not in self._proxy_cache:
            proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
            if proxy is not None and urllib.request.proxy_bypass(url.host):
                proxy = None
            self._proxy_cache[key] = proxy
        return self._proxy_cache[key]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _environment_proxies() -> dict[str, str]:
    """``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` as httpx2 reads them: a value without a scheme is
    an ``http://`` proxy; a SOCKS or other proxy is refused here (aiohttp speaks to HTTP proxies only)."""
    proxies = {}
    for scheme, value in urllib.request.getproxies_environment().items():
        if scheme not in ("http", "https", "all") or not value:
            continue
        if "://" not in value:
            value = "http://" + value
        if not value.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"{scheme.upper()}_PROXY: only http:// and https:// proxies can carry the async client's requests; "
                "for another kind pass transport=httpx2.AsyncHTTPTransport(...)"
            )
        proxies[scheme] = value
    return proxies


def _httpx_error(exc: aiohttp.ClientError, request: httpx2.Request) -> httpx2.TransportError:
    """The httpx2 error of the same meaning: a connect error only when nothing was sent."""
    message = type(exc).__name__  # no URL: the login URL carries the app secret
    kind: Any
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind = httpx2.ConnectTimeout
    elif isinstance(exc, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        kind = httpx2.ProxyError
    elif isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerFingerprintMismatch):
        kind = httpx2.ConnectError  # DNS, refused, TLS handshake: before the request went out
    elif isinstance(exc, aiohttp.ServerTimeoutError):
        kind = httpx2.ReadTimeout
    elif isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        kind = httpx2.RemoteProtocolError
    elif isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        kind = httpx2.UnsupportedProtocol
    else:  # reset, broken pipe, anything else once sending started: the outcome is unknown
        kind = httpx2.ReadError
    error: httpx2.TransportError = kind(message, request=request)
    return error
