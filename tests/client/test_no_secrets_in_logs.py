"""No API key, app secret, session_key or string-to-sign ever reaches a log record, even at DEBUG."""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any

import anyio
import httpx2
import pytest

from minipay.client import AsyncClient, Client, ClientEvent, TransportError
from minipay.protocol import string_to_sign
from minipay.server.logs import JsonFormatter, TextFormatter
from tests.client.sandbox_drivers import NOTIFY_URL, REFUND_NOTIFY_URL, sandbox_driver


def _record_text(record: logging.LogRecord) -> str:
    # Everything a handler or a JSON formatter could emit: the message, the args and every extra, and
    # the line as the service writes it in each of its log formats (log_format = "json" | "text").
    parts = [record.getMessage(), repr(record.args), repr(vars(record))]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    as_json = JsonFormatter().format(record)
    assert json.loads(as_json)["logger"] == record.name
    parts += [as_json, TextFormatter().format(record)]
    return "\n".join(parts)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_no_secret_reaches_the_logs_at_debug_across_a_full_flow(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx2/httpcore2 included
    events: list[ClientEvent] = []
    with sandbox_driver(mode) as d:
        d.client._core.on_event = events.append
        sub = d.sub()
        api_key, app_secret = d.institution["api_key"], sub["app_secret"]
        code, _ = d.login()
        session = d.call("code_to_session", sub["sub_appid"], app_secret, code)
        order = d.call(
            "orders.create",
            out_trade_no="LOGS0001",
            total_fee=1000,
            fee_type="HKD",
            body="Coffee",
            notify_url=NOTIFY_URL,
            spbill_create_ip="203.0.113.10",
            sub_openid=session.openid,
        )
        d.control("POST", "/sandbox/pay", json=dict(d.client.pay_params(order.prepay_id)))
        d.fault("orderquery", "SYSTEMERROR")  # a retry is logged too
        d.call("orders.query", out_trade_no="LOGS0001")
        d.call(
            "refunds.create",
            out_refund_no="LOGSR001",
            out_trade_no="LOGS0001",
            total_fee=1000,
            refund_fee=1000,
            refund_fee_type="HKD",
            notify_url=REFUND_NOTIFY_URL,
        )
        d.advance(120)
        d.call("refunds.query", out_refund_no="LOGSR001")
        d.fault("jscode2session", "40226")
        with pytest.raises(Exception, match="errcode=40226"):
            d.call("code_to_session", sub["sub_appid"], app_secret, d.login()[0])
        session_key = session.session_key.reveal()
        payment = d.received.payments[0]

    assert d.received.replies == [200, 200]
    secrets = {
        "api key": api_key,
        "app secret": app_secret,
        "session_key": session_key,
        "string-to-sign marker": "&key=",
        "payment string-to-sign": string_to_sign(payment.to_fields()),
    }
    logged = "\n".join(_record_text(r) for r in caplog.records)
    assert any(r.name == "minipay.client" for r in caplog.records)
    assert any(r.name == "httpx2" for r in caplog.records)  # its URL log line was seen and masked
    assert "secret=**********" in logged
    for what, value in secrets.items():
        assert value not in logged, f"{what} reached the logs"
    hooked = repr(events)
    for what, value in secrets.items():
        assert value not in hooked, f"{what} reached an event"


def test_the_secret_filter_masks_a_login_url_logged_by_httpx2(caplog: pytest.LogCaptureFixture) -> None:
    from minipay.client._shell import install_log_redaction

    install_log_redaction()
    caplog.set_level(logging.INFO, logger="httpx2")
    logging.getLogger("httpx2").info(
        "HTTP Request: %s %s",
        "GET",
        "https://api.weixin.qq.com/sns/jscode2session?appid=wx1&secret=TOPSECRET&js_code=C0DE",
    )
    text: Any = caplog.records[-1].getMessage()
    assert "TOPSECRET" not in text
    assert "C0DE" not in text
    assert "appid=wx1" in text


@pytest.mark.parametrize("failure", [httpx2.ConnectError, httpx2.ReadTimeout])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_failed_login_exception_holds_no_link_to_the_secret_url(mode: str, failure: type[Exception]) -> None:
    # The jscode2session URL carries the app secret; httpx2's exception keeps its request. Neither
    # __cause__ nor __context__ of what the SDK raises may lead there (error reporters walk both).
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise failure("down", request=request)  # type: ignore[call-arg]

    settings: dict[str, Any] = {"appid": "wx8888888888888888", "mch_id": "1900000109", "api_key": "a" * 32}
    secret, js_code = "s" * 32, "c" * 12  # built at run time: the traceback shows source lines
    if mode == "sync":
        client = Client(**settings, transport=httpx2.MockTransport(refuse), sleep=lambda _: None)
        with pytest.raises(TransportError) as caught:
            client.code_to_session("wx1234567890abcdef", secret, js_code)
    else:

        async def main() -> BaseException:
            async def nap(_: float) -> None:
                return None

            async with AsyncClient(**settings, transport=httpx2.MockTransport(refuse), sleep=nap) as aclient:
                try:
                    await aclient.code_to_session("wx1234567890abcdef", secret, js_code)
                except TransportError as exc:
                    return exc
            raise AssertionError("no error")

        error = anyio.run(main)
    raised = caught.value if mode == "sync" else error
    chain: list[BaseException] = []
    link: BaseException | None = raised
    while link is not None:
        chain.append(link)
        link = link.__cause__ or link.__context__
    assert chain == [raised]
    text = "".join(traceback.format_exception(raised)) + repr(raised) + repr(vars(raised))
    assert secret not in text
    assert js_code not in text
