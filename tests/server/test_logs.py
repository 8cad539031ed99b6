"""Log formats and the log context (minipay.server.logs), without a server."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from minipay.server.logs import bind, configure_logging, current_request_id, log_context, resolve_format


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access = logging.getLogger("minipay.access")
    access_state = (list(access.handlers), access.level, access.propagate)
    uvicorn = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    uvicorn_state = [(list(u.handlers), u.propagate) for u in uvicorn]
    # Other tests may have left a level on the loggers above ours: the root's level must decide here.
    parents = [logging.getLogger(name) for name in ("minipay", "minipay.server", "minipay.server.test")]
    parent_levels = [p.level for p in parents]
    client = logging.getLogger("httpx2")
    client_level = client.level
    for p in parents:
        p.setLevel(logging.NOTSET)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        access.handlers[:], access.level, access.propagate = access_state
        for u, (u_handlers, u_propagate) in zip(uvicorn, uvicorn_state, strict=True):
            u.handlers[:], u.propagate = u_handlers, u_propagate
        for p, lvl in zip(parents, parent_levels, strict=True):
            p.setLevel(lvl)
        client.setLevel(client_level)


def test_the_format_defaults_to_text_on_a_terminal_and_json_elsewhere() -> None:
    assert resolve_format(None, _Tty()) == "text"
    assert resolve_format(None, io.StringIO()) == "json"
    assert resolve_format("json", _Tty()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"


def test_configured_json_logging_writes_one_object_a_line_with_the_context(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging("json", "INFO", stream=out)
    log = logging.getLogger("minipay.server.test")
    with log_context("req-1"):
        bind(payment_id="pay_1", out_trade_no="T1")
        log.info("hello %s", "world", extra={"attempt": 2})
        log.debug("not at INFO")
        logging.getLogger("minipay.access").info("GET / 200")
    log.warning("outside")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    first, access, outside = (json.loads(line) for line in lines)
    assert first["message"] == "hello world"
    assert (first["level"], first["logger"], first["request_id"]) == ("INFO", "minipay.server.test", "req-1")
    assert (first["payment_id"], first["out_trade_no"], first["attempt"]) == ("pay_1", "T1", 2)
    assert (access["logger"], access["request_id"], access["payment_id"]) == ("minipay.access", "req-1", "pay_1")
    assert outside["request_id"] is None
    assert "payment_id" not in outside
    assert current_request_id() is None


def test_text_logging_puts_the_request_id_and_the_ids_on_the_line(restore_logging: None) -> None:
    out = _Tty()
    configure_logging(None, "WARNING", stream=out)  # a terminal: text
    with log_context("req-2", refund_id="re_1"):
        logging.getLogger("minipay.server").warning("refund stuck")
        logging.getLogger("minipay.server").info("below the level")
        logging.getLogger("minipay.access").info("access lines are on whatever the level")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert " WARNING minipay.server [req-2] refund stuck refund_id=re_1" in lines[0]
    assert "[req-2] access lines are on" in lines[1]


def test_with_the_access_log_off_no_access_line_is_even_built(restore_logging: None) -> None:
    configure_logging("json", "DEBUG", access_log=False, stream=io.StringIO())
    assert not logging.getLogger("minipay.access").isEnabledFor(logging.INFO)


def test_uvicorn_s_own_access_log_is_cut_off_so_a_request_is_logged_once_without_its_query(
    restore_logging: None,
) -> None:
    # uvicorn decides per connection with ``hasHandlers()`` whether to build its access line at all.
    out = io.StringIO()
    configure_logging("json", "DEBUG", stream=out)
    uvicorn_access = logging.getLogger("uvicorn.access")
    assert not uvicorn_access.hasHandlers()
    uvicorn_access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/v1/payments?cursor=x", "1.1", 200)
    logging.getLogger("uvicorn.error").warning("still written")
    assert [json.loads(line)["logger"] for line in out.getvalue().splitlines()] == ["uvicorn.error"]


def test_the_http_client_s_line_per_request_is_written_at_debug_only(restore_logging: None) -> None:
    # The SDK logs each WeChat call attempt at DEBUG (failures at INFO); httpx2's own INFO line per
    # request would be a second line for each, formatted on the hot path of every API call.
    client = logging.getLogger("httpx2")
    out = io.StringIO()
    configure_logging("json", "INFO", stream=out)
    client.info("HTTP Request: POST http://wechat/pay/unifiedorder 200")
    client.warning("a warning is written")
    assert [json.loads(line)["message"] for line in out.getvalue().splitlines()] == ["a warning is written"]
    out = io.StringIO()
    configure_logging("json", "DEBUG", stream=out)
    client.info("HTTP Request: POST http://wechat/pay/unifiedorder 200")
    assert "unifiedorder" in out.getvalue()
