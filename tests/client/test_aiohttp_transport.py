"""The async client's default transport (aiohttp under httpx2) on real loopback sockets.

Small asyncio servers stand in for WeChat where a test needs a failure the sandbox never makes: a
refused connection, an answer that never comes, a connection closed once the request is in, a
compressed answer, a proxy. What is checked is what the SDK promises: a connect error only when
nothing was sent, every other failure an unknown outcome, one request on the wire per attempt, the
login URL sent exactly as built, and proxies from the environment.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from minipay.client import AsyncClient, ConfigurationError, ConnectError, ReadTimeoutError
from minipay.client._aiohttp import AiohttpTransport
from minipay.serve import free_port
from tests.client.pki import Issued, issue, make_ca
from tests.client.test_tls_loopback import NOTIFY_URL, mutual_tls_options, tls_sandbox

SECRET = "s3cr+t/with=odd&chars"
ORDER = {
    "out_trade_no": "AIO0001",
    "total_fee": 1000,
    "fee_type": "HKD",
    "body": "Coffee",
    "notify_url": NOTIFY_URL,
    "spbill_create_ip": "203.0.113.10",
    "sub_openid": "oUser",
}


def _client(base_url: str, **extra: Any) -> AsyncClient:
    options: dict[str, Any] = {"max_retries": 0, "read_timeout": 2.0, "connect_timeout": 2.0, **extra}
    return AsyncClient(
        appid="wx8888888888888888",
        mch_id="1900000109",
        api_key="a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6",
        sub_mch_id="1900000110",
        sub_appid="wx1111111111111111",
        base_url=base_url,
        login_base_url=base_url,
        **options,
    )


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """A loopback HTTP/1.1 server whose every connection is ``handler``; it records what it read."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.connections = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes] | None:
        head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
        if not head:
            return None
        line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines if x)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append((line, headers, body))
        return line, headers, body


def _answer(body: bytes, *, headers: dict[str, str] | None = None) -> bytes:
    head = {"Content-Length": str(len(body)), "Content-Type": "application/json", **(headers or {})}
    return b"HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()).encode() + b"\r\n" + body


SESSION = json.dumps({"openid": "oUser1", "session_key": "c2Vzc2lvbktleQ=="}).encode()


async def _login_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    while await server.read_request(reader) is not None:
        writer.write(_answer(SESSION))
        await writer.drain()


def test_the_login_url_goes_out_exactly_as_built_once_per_call() -> None:
    async def main() -> None:
        async with Server(_login_answers) as server, _client(server.url) as client:
            first = await client.code_to_session("wx1111111111111111", SECRET, "code+1/=")
            second = await client.code_to_session("wx1111111111111111", SECRET, "code 2")
            assert (first.openid, second.openid) == ("oUser1", "oUser1")
            expected = httpx2.URL(
                server.url + "/sns/jscode2session",
                params={
                    "appid": "wx1111111111111111",
                    "secret": SECRET,
                    "js_code": "code+1/=",
                    "grant_type": "authorization_code",
                },
            )
            assert server.requests[0][0] == f"GET {expected.raw_path.decode()} HTTP/1.1"
            assert len(server.requests) == 2
            assert server.connections == 1  # the connection was kept alive and reused

    asyncio.run(main())


def test_a_refused_connection_is_a_connect_error_never_an_unknown_outcome() -> None:
    async def main() -> None:
        async with _client(f"http://127.0.0.1:{free_port()}") as client:
            with pytest.raises(ConnectError) as caught:
                await client.orders.create(**ORDER)
            assert caught.value.retryable
            assert not caught.value.outcome_unknown

    asyncio.run(main())


def test_an_answer_that_never_comes_is_a_read_timeout_with_an_unknown_outcome() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        await asyncio.sleep(5)

    async def main() -> None:
        async with Server(silent) as server, _client(server.url, read_timeout=0.3) as client:
            with pytest.raises(ReadTimeoutError) as caught:
                await client.orders.create(**ORDER)
            assert caught.value.outcome_unknown
            assert "no answer in time" in str(caught.value)
            assert len(server.requests) == 1

    asyncio.run(main())


def test_a_connection_closed_once_the_request_is_in_leaves_the_outcome_unknown() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)

    async def main() -> None:
        async with Server(hang_up) as server, _client(server.url) as client:
            with pytest.raises(ReadTimeoutError) as caught:
                await client.orders.create(**ORDER)
            assert caught.value.outcome_unknown
            assert "after the request was sent" in str(caught.value)
            assert len(server.requests) == 1

    asyncio.run(main())


def test_a_kept_alive_connection_closed_under_a_request_is_not_sent_again_behind_the_sdks_back() -> None:
    # aiohttp would resend an idempotent GET once on a fresh connection; the SDK counts attempts
    # itself (and a login code is single use), so the second call fails after one request.
    async def once_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(_answer(SESSION))
        await writer.drain()
        await server.read_request(reader)  # the second request on this connection: read, then closed

    async def main() -> None:
        async with Server(once_then_hang_up) as server, _client(server.url) as client:
            await client.code_to_session("wx1111111111111111", SECRET, "code1")
            with pytest.raises(ReadTimeoutError):
                await client.code_to_session("wx1111111111111111", SECRET, "code2")
            assert len(server.requests) == 2
            assert server.connections == 1

    asyncio.run(main())


def test_a_compressed_answer_is_decoded_by_httpx2() -> None:
    async def gzipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(_answer(gzip.compress(SESSION), headers={"Content-Encoding": "gzip"}))
        await writer.drain()

    async def main() -> None:
        async with Server(gzipped) as server, _client(server.url) as client:
            assert (await client.code_to_session("wx1111111111111111", SECRET, "c")).openid == "oUser1"
            assert "gzip" in server.requests[0][1]["accept-encoding"]

    asyncio.run(main())


def test_the_proxy_comes_from_the_environment_and_no_proxy_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with Server(_login_answers) as proxy, Server(_login_answers) as direct:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            monkeypatch.setenv("NO_PROXY", "localhost")
            async with _client("http://wechat.example.test") as client:
                assert (await client.code_to_session("wx1111111111111111", SECRET, "c")).openid == "oUser1"
            line = proxy.requests[0][0]
            assert line.startswith("GET http://wechat.example.test/sns/jscode2session?"), line
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
            async with _client(direct.url) as client:
                await client.code_to_session("wx1111111111111111", SECRET, "c")
            assert len(proxy.requests) == 1
            assert len(direct.requests) == 1

    asyncio.run(main())


def test_one_client_serves_one_event_loop() -> None:
    async def call(client: AsyncClient) -> None:
        await client.code_to_session("wx1111111111111111", SECRET, "c")

    async def main() -> None:
        async with Server(_login_answers) as server:
            client = _client(server.url)
            await call(client)
            failure: list[BaseException] = []

            def elsewhere() -> None:
                try:
                    asyncio.run(call(client))
                except RuntimeError as exc:
                    failure.append(exc)

            await asyncio.to_thread(elsewhere)
            assert failure
            assert "another event loop" in str(failure[0])
            await client.aclose()

    asyncio.run(main())


def test_the_transport_holds_no_secret_in_its_repr() -> None:
    transport = AiohttpTransport(ssl.create_default_context())
    assert repr(transport) == "AiohttpTransport(open=False)"


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca()


def test_an_async_refund_goes_through_mutual_tls(tmp_path: Path, ca: Issued) -> None:
    from minipay.client import ClientCertificate
    from minipay.client._certs import build_ssl_context

    with tls_sandbox(tmp_path, ca) as base_url:
        cert = ClientCertificate.from_p12(issue(ca, "1900000109", server=False).p12(b"1900000109"))
        control_tls = build_ssl_context(str(tmp_path / "ca.pem"), cert, mch_id="1900000109")
        with httpx2.Client(base_url=base_url, verify=control_tls) as control:
            inst = control.get("/sandbox/merchants").json()["institutions"][0]
            sub = inst["sub_merchants"][0]
            code = control.post("/sandbox/login", json={"appid": sub["sub_appid"], "user": "aio"}).json()["code"]

            async def main() -> dict[str, Any]:
                async with AsyncClient(**mutual_tls_options(base_url, inst, sub, cert, tmp_path / "ca.pem")) as client:
                    session = await client.code_to_session(sub["sub_appid"], sub["app_secret"], code)
                    order = await client.orders.create(**{**ORDER, "sub_openid": session.openid})
                    params = dict(client.pay_params(order.prepay_id))
                    paid = await asyncio.to_thread(lambda: control.post("/sandbox/pay", json=params).json())
                    assert paid["errMsg"] == "requestPayment:ok"
                    refund = await client.refunds.create(
                        out_refund_no="AIOR0001", out_trade_no="AIO0001", total_fee=1000, refund_fee=300,
                        refund_fee_type="HKD",
                    )  # fmt: skip
                    query = await client.refunds.query(out_refund_no="AIOR0001")
                    return {"refund_fee": refund.refund_fee, "found": query.find("AIOR0001") is not None}

            assert asyncio.run(main()) == {"refund_fee": 300, "found": True}


def test_a_server_closing_after_each_answer_never_turns_into_a_connect_error() -> None:
    # A connection the server closed right after answering, without "Connection: close", may be
    # reused before the event loop has seen the close: that request fails as sent (for the SDK:
    # outcome unknown), never as "not sent", which would invite a blind resend of a write.
    async def close_after_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(_answer(b"<xml/>"))
        await writer.drain()

    async def main() -> None:
        async with Server(close_after_answer) as server:
            transport = AiohttpTransport(ssl.create_default_context())
            async with httpx2.AsyncClient(transport=transport) as http:
                failures: list[httpx2.TransportError] = []
                for _ in range(300):  # until the race has happened a few times (about one in two here)
                    if len(failures) == 5:
                        break
                    try:
                        await http.post(server.url + "/pay/unifiedorder", content=b"<xml/>")
                    except httpx2.TransportError as exc:
                        failures.append(exc)
            assert failures, "the race this test is about did not happen"
            never_sent = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout, httpx2.ProxyError)
            assert not [exc for exc in failures if isinstance(exc, never_sent)]

    asyncio.run(main())


def test_cookies_are_kept_by_httpx2_alone_and_the_answer_is_httpx2s() -> None:
    async def sets_a_cookie(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await server.read_request(reader) is not None:
            writer.write(_answer(SESSION, headers={"Set-Cookie": "sid=abc; Path=/"}))
            await writer.drain()

    async def main() -> None:
        async with Server(sets_a_cookie) as server:
            transport = AiohttpTransport(ssl.create_default_context())
            async with httpx2.AsyncClient(transport=transport) as http:
                site = server.url.replace("127.0.0.1", "localhost")  # aiohttp's jar keeps no cookie of an IP
                first = await http.get(site + "/one")
                assert first.elapsed.total_seconds() >= 0  # httpx2 timed and closed the answer
                assert first.http_version == "HTTP/1.1"
                await http.get(site + "/two")
                http.cookies.clear()
                await http.get(site + "/three")
            sent = [headers.get("cookie") for _, headers, _ in server.requests]
            assert sent == [None, "sid=abc", None]

    asyncio.run(main())


def test_proxies_are_read_as_httpx2_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with Server(_login_answers) as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url.removeprefix("http://"))  # no scheme: an http:// proxy
            monkeypatch.delenv("NO_PROXY", raising=False)
            async with _client("http://wechat.example.test") as client:
                await client.code_to_session("wx1111111111111111", SECRET, "c")
            assert proxy.requests[0][0].startswith("GET http://wechat.example.test/")

    asyncio.run(main())
    monkeypatch.setenv("ALL_PROXY", "socks5://user:pw@127.0.0.1:1080")
    with pytest.raises(ConfigurationError, match="ALL_PROXY") as caught:
        _client("http://wechat.example.test")
    assert "pw" not in str(caught.value)
