"""The service's HTTP/1.1 protocol: uvicorn's httptools protocol sending each response in one write.

``CoalescingTransport`` is checked against a recording transport on a real event loop (what reaches
the socket, and when); ``HttpProtocol`` against uvicorn's own protocol on the same requests (one
write a response instead of two, the same bytes), and served on a real loopback socket with
keep-alive, pipelining, a streamed body, a large body, and ``minipay serve``'s app."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import httpx2 as httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from minipay._web._transport import HOLD_LIMIT, CoalescingTransport, HttpProtocol
from minipay.server import asgi

pytestmark = pytest.mark.anyio


class Recording(asyncio.Transport):
    """A transport that records what is written, and when it is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.objects: list[Any] = []  # what write() was given, as given
        self.events: list[str] = []
        self.closing = False
        self.eof = False
        self.fail: Exception | None = None  # raised by the next write
        self.protocol: Any = None

    def write(self, data: Any) -> None:
        if self.closing:
            raise RuntimeError("write on a closed transport")
        if self.eof:
            raise RuntimeError("write after write_eof")
        if self.fail is not None:
            raise self.fail
        self.writes.append(bytes(data))
        self.objects.append(data)
        self.events.append("write")

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")

    def write_eof(self) -> None:
        self.eof = True
        self.events.append("eof")

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 7

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol
        self.events.append("set_protocol")

    def pause_reading(self) -> None:
        self.events.append("pause_reading")

    def resume_reading(self) -> None:
        self.events.append("resume_reading")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 80)}.get(name, default)


async def turn() -> None:
    """Let the loop run the callbacks scheduled so far (a coalescing transport's flush among them)."""
    await asyncio.sleep(0)


async def test_the_writes_of_one_turn_leave_as_one_write_after_it() -> None:
    real = Recording()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(bytearray(b"body"))
    assert real.writes == []
    assert transport.get_write_buffer_size() == 19 + 4 + 7
    await turn()
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    transport.write(b"next")
    await turn()
    assert real.writes[1:] == [b"next"]
    assert transport.get_write_buffer_size() == 7


async def test_a_buffer_the_caller_reuses_after_write_is_sent_as_it_was() -> None:
    real = Recording()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    buffer = bytearray(b"first")
    transport.write(buffer)
    buffer[:] = b"XXXXX"
    transport.write(memoryview(buffer))
    await turn()
    assert real.writes == [b"firstXXXXX"]


async def test_large_writes_are_not_held_so_flow_control_sees_them_at_once() -> None:
    real = Recording()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    big = b"x" * HOLD_LIMIT
    transport.write(big)
    assert real.writes == [big]  # nothing held: sent in the call
    assert real.objects[0] is big  # passed on as it is, not copied
    transport.write(b"head")
    transport.write(b"y" * (HOLD_LIMIT - 4))  # the held bytes reach the limit: everything goes now, in order
    assert real.writes[1:] == [b"head" + b"y" * (HOLD_LIMIT - 4)]
    await turn()
    assert len(real.writes) == 2
    transport.write(b"head")
    body = b"z" * (HOLD_LIMIT + 1)
    transport.write(body)  # a large body after a held head: the head first, then the body, uncopied
    assert real.writes[2:] == [b"head", body]
    assert real.objects[3] is body
    large = bytearray(HOLD_LIMIT)
    transport.write(large)  # a large bytearray too goes as it is (the real transport copies what it keeps)
    assert real.objects[4] is large


async def test_close_and_write_eof_send_what_is_held_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    real = Recording()
    transport = CoalescingTransport(real, loop)
    transport.write(b"bye")
    transport.write(b"!")
    transport.write_eof()
    assert real.events == ["write", "eof"]
    assert real.writes == [b"bye!"]
    await turn()  # the flush scheduled finds nothing held
    assert real.writes == [b"bye!"]

    real = Recording()
    transport = CoalescingTransport(real, loop)
    transport.write(b"last")
    transport.close()
    assert real.events == ["write", "close"]
    assert real.writes == [b"last"]

    real = Recording()
    transport = CoalescingTransport(real, loop)
    transport.write(b"never sent")
    transport.abort()
    await turn()
    assert real.events == ["abort"]


async def test_set_protocol_sends_what_the_old_protocol_wrote_first_and_the_new_one_writes_through() -> None:
    real = Recording()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    transport.set_protocol(asyncio.Protocol())
    assert real.events == ["write", "set_protocol"]
    transport.write(b"frame")  # an upgraded protocol's writes are not held (its EOF is not ours to watch)
    assert real.writes[1:] == [b"frame"]


async def test_a_failed_send_after_the_turn_aborts_the_connection_and_close_still_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    real = Recording()
    transport = CoalescingTransport(real, loop)
    transport.write(b"response")
    real.fail = OSError("broken")
    await turn()  # the send fails in the loop's callback, where no caller hears of it
    assert real.events == ["abort"]
    assert "sending a response failed" in caplog.text

    real = Recording()
    transport = CoalescingTransport(real, loop)
    transport.write(b"response")
    real.fail = OSError("broken")
    with pytest.raises(OSError, match="broken"):
        transport.close()
    assert real.events == ["close"]  # the connection is closed all the same, not leaked


async def test_a_connection_lost_under_held_bytes_drops_them_and_writes_pass_through_once_closing() -> None:
    real = Recording()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"late")
    real.closing = True  # the peer went away before the loop's turn ended
    transport.close()  # what uvicorn's connection_lost does: no write on the closed handle
    await turn()
    assert real.writes == []
    assert real.events == ["close"]
    with pytest.raises(RuntimeError):
        transport.write(b"after")  # straight to the real transport, which says what it always said


async def test_the_rest_goes_to_the_real_transport() -> None:
    real = Recording()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.pause_reading()
    transport.resume_reading()
    assert transport.get_extra_info("peername") == ("127.0.0.1", 5555)
    assert transport.get_extra_info("nothing", "default") == "default"
    assert transport.can_write_eof()
    assert not transport.is_closing()
    assert real.events == ["pause_reading", "resume_reading"]
    assert "CoalescingTransport held=0" in repr(transport)


# -- the protocol ----------------------------------------------------------------------------------------


async def _small(_: Request) -> Response:
    return PlainTextResponse("hello")


async def _stream(_: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            await asyncio.sleep(0.01)
            yield f"chunk {i};".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


async def _large(_: Request) -> Response:
    return Response(bytes(range(256)) * 8192, media_type="application/octet-stream")  # 2 MiB


async def _echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


async def _busy(_: Request) -> Response:
    deadline = time.monotonic() + 0.3  # CPU-bound work holding the loop: the client's half-close
    while time.monotonic() < deadline:  # is read meanwhile
        pass
    return PlainTextResponse("done")


#: Chunks the firehose has produced (its reader may read nothing).
produced: list[int] = []


async def _firehose(_: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        chunk = b"x" * 1024
        for _ in range(200_000):  # 200 MB, if nothing held it back
            produced.append(1)
            yield chunk

    return StreamingResponse(chunks(), media_type="application/octet-stream")


APP = Starlette(
    routes=[
        Route("/small", _small),
        Route("/stream", _stream),
        Route("/large", _large),
        Route("/echo", _echo, methods=["POST"]),
        Route("/busy", _busy),
        Route("/firehose", _firehose),
    ]
)


async def _serve_one(protocol_class: type[HttpToolsProtocol], request: bytes) -> Recording:
    """Feed ``request`` to a new connection of ``protocol_class`` serving APP; the writes it made."""
    config = uvicorn.Config(APP, http=protocol_class, lifespan="off", log_level="warning", access_log=False)
    config.load()
    state = ServerState()
    protocol = protocol_class(config=config, server_state=state, app_state={})
    real = Recording()
    protocol.connection_made(real)
    protocol.data_received(request)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if not state.tasks:
            break
    await turn()
    return real


async def test_a_small_response_is_one_write_with_the_same_bytes_as_uvicorns_two() -> None:
    request = b"GET /small HTTP/1.1\r\nHost: test\r\n\r\n"
    ours = await _serve_one(HttpProtocol, request)
    stock = await _serve_one(HttpToolsProtocol, request)
    assert len(stock.writes) == 2  # why this protocol exists: uvicorn sends the head and body apart
    assert len(ours.writes) == 1
    assert ours.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert ours.writes[0].endswith(b"\r\n\r\nhello")
    strip_date = [line for line in ours.writes[0].split(b"\r\n") if not line.startswith(b"date:")]
    assert strip_date == [line for line in b"".join(stock.writes).split(b"\r\n") if not line.startswith(b"date:")]


async def test_pipelined_requests_are_answered_in_order() -> None:
    request = b"GET /small HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
    real = await _serve_one(HttpProtocol, request)
    sent = b"".join(real.writes)
    assert sent.index(b"\r\n\r\nhello") < sent.index(b"\r\n\r\nabc")
    assert sent.count(b"HTTP/1.1 200 OK") == 2


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """APP under uvicorn with HttpProtocol on a loopback port."""
    with running_with(APP) as base_url:
        yield base_url


@contextlib.contextmanager
def running_with(app: Any, loop: Literal["auto", "asyncio"] = "auto") -> Iterator[str]:
    """``app`` under uvicorn with HttpProtocol on a loopback port, in a thread, on ``loop`` (``auto``:
    uvloop, as ``minipay serve`` runs); its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=HttpProtocol, loop=loop, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "the server stopped before it started"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_keep_alive_stream_and_large_bodies_over_a_real_socket(server: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as http:
        for _ in range(3):  # one connection, kept alive
            assert http.get("/small").text == "hello"
        assert http.get("/stream").text == "chunk 0;chunk 1;chunk 2;"
        large = http.get("/large")
        assert large.content == bytes(range(256)) * 8192
        body = bytes(range(256)) * 1000
        assert http.post("/echo", content=body).content == body


def test_raw_pipelined_requests_over_a_real_socket(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n" * 5)
        received = b""
        while received.count(b"hello") < 5:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection"
            received += chunk
        assert received.count(b"HTTP/1.1 200 OK") == 5


def test_the_services_app_under_the_protocol_answers_as_before(tmp_path: Any, monkeypatch: Any) -> None:
    """``uvicorn --factory minipay.server.asgi:app_from_env --http minipay.server.asgi:HttpProtocol``."""
    assert asgi.HttpProtocol is HttpProtocol
    monkeypatch.setenv("MINIPAY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    monkeypatch.delenv("MINIPAY_CONFIG", raising=False)
    with running_with(asgi.app_from_env()) as base_url, httpx.Client(base_url=base_url, timeout=10) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        missing = http.get("/v1/payments/pay_nothing", headers={"Authorization": "Bearer nope"})
        assert missing.status_code == 401
        assert missing.headers["content-type"].startswith("application/")


async def test_minipay_serve_runs_the_service_under_the_protocol(tmp_path: Any, monkeypatch: Any) -> None:
    from minipay.serve import ServePlan, run_serve
    from minipay.server.settings import Settings

    served: list[Any] = []

    async def serve(self: uvicorn.Server, sockets: Any = None) -> None:
        served.append(self.config.http)

    monkeypatch.setattr(uvicorn.Server, "serve", serve)
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    await run_serve(ServePlan(settings=settings), port=0, worker=False, access_log=False)
    assert served == [HttpProtocol]


@pytest.mark.parametrize("loop", ["auto", "asyncio"])
def test_a_client_that_half_closes_after_its_request_gets_the_response(loop: Literal["auto", "asyncio"]) -> None:
    """The client sends its request and shuts down its side (``SHUT_WR``) while the app is busy:
    the loop reads the EOF before it would send the held response, and closes the real transport
    itself (uvloop does, on uvicorn's ``eof_received``). uvicorn's own protocol sends the response,
    and so must this one."""
    with running_with(APP, loop) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET /busy HTTP/1.1\r\nHost: t\r\n\r\n")
                time.sleep(0.1)
                sock.shutdown(socket.SHUT_WR)
                received = b""
                while chunk := sock.recv(65536):
                    received += chunk
            assert received.startswith(b"HTTP/1.1 200 OK\r\n")
            assert received.endswith(b"\r\n\r\ndone")


def test_a_reader_that_reads_nothing_holds_the_producer_back(server: str) -> None:
    """Flow control: a streamed body to a client that reads nothing stops at what the socket buffers
    and the transports hold, instead of piling 200 MB up in the server's memory."""
    port = int(server.rsplit(":", 1)[1])
    produced.clear()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /firehose HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(1.0)
        first = len(produced)
        time.sleep(0.5)
        assert len(produced) == first  # paused, not slowed
        assert 100 < first < 32_000  # it did stream, and stopped short of 32 MB
