"""The control API, the dashboard, the config file, and the import rule."""

from __future__ import annotations

import ast
import contextlib
import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from minipay.protocol import ConfigurationError, encode_xml, sign
from minipay.sandbox import SandboxConfig, create_app
from minipay.sandbox._dashboard import SHOWN
from tests.profiles import LENIENT
from tests.sandbox.conftest import (
    APPID,
    HKD_APP,
    HKD_SECRET,
    HKD_SUB,
    JPY_APP,
    JPY_SUB,
    KEY,
    MCH_ID,
    START,
    MakeSandbox,
    Receiver,
    Sandbox,
)

pytestmark = pytest.mark.anyio
SANDBOX_SRC = Path(__file__).resolve().parents[2] / "src" / "minipay" / "sandbox"


async def test_merchants_lists_the_default_world(sandbox: Sandbox) -> None:
    world = (await sandbox.http.get("/sandbox/merchants")).json()
    [inst] = world["institutions"]
    assert (inst["appid"], inst["mch_id"], inst["api_key"]) == (APPID, MCH_ID, KEY)
    subs = {s["sub_mch_id"]: s for s in inst["sub_merchants"]}
    assert subs[HKD_SUB] == {
        "sub_mch_id": HKD_SUB,
        "sub_appid": HKD_APP,
        "app_secret": HKD_SECRET,
        "settlement_currency": "HKD",
        "allowed_fee_types": ["CNY", "HKD"],
    }
    assert subs[JPY_SUB]["settlement_currency"] == "JPY"
    assert subs[JPY_SUB]["sub_appid"] == JPY_APP
    assert world["rates"]["HKD"] == 92000000


async def test_clock_get_advance_and_set(sandbox: Sandbox) -> None:
    clock = (await sandbox.http.get("/sandbox/clock")).json()
    assert clock["china_time"] == "2024-01-01T12:00:00+08:00"
    assert clock["realtime"] is False
    assert (await sandbox.advance(90))["china_time"] == "2024-01-01T12:01:30+08:00"
    moved = (await sandbox.http.post("/sandbox/clock", json={"set": "2024-03-01T00:00:00Z"})).json()
    assert moved["now"] == "2024-03-01T00:00:00+00:00"


@pytest.mark.parametrize("body", [{}, {"advance": -1}, {"advance": "x"}, {"set": "2024-01-01T00:00:00"}, {"set": "x"}])
async def test_clock_refuses_bad_input(sandbox: Sandbox, body: dict[str, object]) -> None:
    response = await sandbox.http.post("/sandbox/clock", json=body)
    assert response.status_code == 400
    assert "error" in response.json()


@pytest.mark.parametrize(
    "raw", ['{"advance": NaN}', '{"advance": Infinity}', '{"advance": 1e300}', '{"advance": true}']
)
async def test_an_advance_the_clock_cannot_hold_is_refused_not_a_crash(sandbox: Sandbox, raw: str) -> None:
    # Python's json reads NaN/Infinity; timedelta(seconds=nan) raised a bare ValueError (HTTP 500).
    response = await sandbox.http.post("/sandbox/clock", content=raw)
    assert response.status_code == 400
    assert "ten years" in response.json()["error"]
    for seconds in ("nan", "inf", "1e300", "-1"):
        form = await sandbox.http.post("/sandbox/ui/advance", data={"seconds": seconds})
        assert form.status_code == 303
        assert "ten+years" in form.headers["location"] or "ten%20years" in form.headers["location"]
    assert (await sandbox.http.get("/sandbox/clock")).json()["china_time"] == "2024-01-01T12:00:00+08:00"


async def test_the_clock_starts_at_the_real_time_unless_configured() -> None:
    from datetime import UTC, datetime, timedelta

    app = create_app(LENIENT)
    assert abs(app.state.sandbox.now() - datetime.now(UTC)) < timedelta(seconds=5)
    configured = create_app(SandboxConfig.from_dict({"start": "2030-05-05T10:00:00+08:00"}))
    assert configured.state.sandbox.now() == datetime(2030, 5, 5, 2, 0, tzinfo=UTC)


async def test_reset_empties_the_state_and_replays_the_seed(sandbox: Sandbox) -> None:
    first = await sandbox.paid_order()
    await sandbox.advance(3600)
    assert (await sandbox.http.post("/sandbox/reset")).json() == {"ok": True}
    state = (await sandbox.http.get("/sandbox/state")).json()
    assert state["orders"] == state["refunds"] == state["notifications"] == []
    assert state["now"] == START.isoformat().replace("+08:00", "+00:00").replace("12:00:00", "04:00:00")
    again = await sandbox.paid_order()
    assert again["prepay_id"] == first["prepay_id"]


async def test_state_dumps_orders_refunds_notifications_and_pools(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    state = (await sandbox.http.get("/sandbox/state")).json()
    [order] = state["orders"]
    assert order["trade_state"] == "SUCCESS"
    assert order["cash_fee"] == 920
    assert len(state["notifications"]) == 1
    assert state["pools"] == {f"{HKD_SUB}/20240101": 920}
    assert KEY not in str(state)


async def test_requests_journal_records_every_call(sandbox: Sandbox) -> None:
    await sandbox.order()
    await sandbox.call("/pay/orderquery", {"sub_mch_id": HKD_SUB, "out_trade_no": "ORDER0001"})
    await sandbox.call("/pay/orderquery", {"sub_mch_id": HKD_SUB, "out_trade_no": "OTHER"})
    journal = (await sandbox.http.get("/sandbox/requests")).json()["requests"]
    assert [e["endpoint"] for e in journal] == ["unifiedorder", "orderquery", "orderquery"]
    assert journal[0]["result_code"] == "SUCCESS"
    assert journal[0]["fields"]["out_trade_no"] == "ORDER0001"
    assert journal[2]["err_code"] == "ORDERNOTEXIST"
    only = (await sandbox.http.get("/sandbox/requests", params={"out_trade_no": "OTHER"})).json()["requests"]
    assert len(only) == 1
    limited = (await sandbox.http.get("/sandbox/requests", params={"limit": "1"})).json()["requests"]
    assert limited[0]["fields"]["out_trade_no"] == "OTHER"


async def test_debug_sign_explains_a_mismatch_without_the_key(sandbox: Sandbox) -> None:
    fields = {"appid": APPID, "mch_id": MCH_ID, "nonce_str": "abc", "body": "test"}
    wrong = {**fields, "sign": sign(fields, "Z" * 32)}
    answer = (await sandbox.http.post("/sandbox/debug/sign", json={"fields": wrong})).json()
    assert answer["matches"] is False
    assert answer["algorithm"] == "MD5"
    assert answer["string_to_sign"] == f"appid={APPID}&body=test&mch_id={MCH_ID}&nonce_str=abc&key=<redacted>"
    assert answer["expected"] == sign(fields, KEY)
    assert answer["received"] == wrong["sign"]
    assert KEY not in str(answer)
    right = {**fields, "sign": sign(fields, KEY)}
    xml = encode_xml(right).decode()
    assert (await sandbox.http.post("/sandbox/debug/sign", json={"xml": xml})).json()["matches"] is True


async def test_debug_sign_explains_pay_sign_and_takes_an_explicit_key(sandbox: Sandbox) -> None:
    pay = {"appId": HKD_APP, "timeStamp": "1704067200", "nonceStr": "n", "package": "prepay_id=wx1", "signType": "MD5"}
    pay_sign = sign(pay, KEY)
    answer = (await sandbox.http.post("/sandbox/debug/sign", json={"fields": {**pay, "paySign": pay_sign}})).json()
    assert answer["matches"] is True
    other = (await sandbox.http.post("/sandbox/debug/sign", json={"fields": {"a": "1"}, "key": "Q" * 32})).json()
    assert other["expected"] == sign({"a": "1"}, "Q" * 32)
    assert (await sandbox.http.post("/sandbox/debug/sign", json={"fields": {"a": "1"}})).status_code == 400
    assert (await sandbox.http.post("/sandbox/debug/sign", json={})).status_code == 400


async def test_dashboard_shows_orders_and_its_buttons_work(sandbox: Sandbox) -> None:
    await sandbox.order("UI1")
    await sandbox.order("UI2")
    page = (await sandbox.http.get("/sandbox/")).text
    assert "UI1" in page
    assert 'action="/sandbox/ui/pay"' in page
    paid = await sandbox.http.post("/sandbox/ui/pay", data={"out_trade_no": "UI1", "sub_mch_id": HKD_SUB})
    assert paid.status_code == 303
    assert sandbox.backend.orders[(HKD_SUB, "UI1")].state == "SUCCESS"
    assert len(sandbox.receiver.received) == 1
    await sandbox.http.post("/sandbox/ui/close", data={"out_trade_no": "UI2"})
    assert sandbox.backend.orders[(HKD_SUB, "UI2")].state == "CLOSED"
    note = sandbox.backend.notifications[0]
    await sandbox.http.post("/sandbox/ui/resend", data={"id": str(note.id)})
    assert len(sandbox.receiver.received) == 2
    await sandbox.http.post("/sandbox/ui/advance", data={"seconds": "3600"})
    assert (await sandbox.http.get("/sandbox/clock")).json()["china_time"] == "2024-01-01T13:00:00+08:00"
    page = (await sandbox.http.get("/sandbox/", params={"msg": "<script>x</script>"})).text
    assert "<script>x" not in page
    assert "requestPayment:ok" not in page or "UI1" in page


async def test_the_dashboard_cancel_button_closes_the_order_of_its_own_sub_merchant(sandbox: Sandbox) -> None:
    # out_trade_no is unique per sub-merchant only: the HKD and the JPY shop may both have "SAME".
    await sandbox.order("SAME")
    jpy_openid = (await sandbox.login(JPY_APP))["openid"]
    jpy = await sandbox.order("SAME", sub_mch_id=JPY_SUB, sub_appid=JPY_APP, fee_type="JPY", sub_openid=jpy_openid)
    assert jpy["result_code"] == "SUCCESS", jpy
    page = (await sandbox.http.get("/sandbox/")).text
    assert f'name="sub_mch_id" value="{JPY_SUB}"' in page
    await sandbox.http.post("/sandbox/ui/close", data={"out_trade_no": "SAME", "sub_mch_id": JPY_SUB})
    assert sandbox.backend.orders[(JPY_SUB, "SAME")].state == "CLOSED"
    assert sandbox.backend.orders[(HKD_SUB, "SAME")].state == "NOTPAY"


async def test_config_from_toml_overrides_the_default_world(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.toml"
    path.write_text(
        """
seed = 9
start = 2024-06-01T09:00:00+08:00
[rates]
USD = 700000000
[[institutions]]
appid = "wx1111111111111111"
mch_id = "1800000001"
api_key = "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp"
  [[institutions.sub_merchants]]
  sub_mch_id = "1800000002"
  settlement_currency = "USD"
  sub_appid = "wx3333333333333333"
  app_secret = "s3cr3t"
[notify]
allow_hosts = ["merchant.example.com"]
[rules]
refund_delay = 5
""",
        encoding="utf-8",
    )
    config = SandboxConfig.from_toml(path)
    assert config.seed == 9
    assert config.institutions[0].sub_merchants[0].fee_types == frozenset({"USD", "CNY"})
    assert config.rules.refund_delay == 5
    assert config.rules.close_min_age == 300
    assert "Zz9Y" not in repr(config)
    app = create_app(config)
    assert app.state.sandbox.now().isoformat() == "2024-06-01T01:00:00+00:00"


@pytest.mark.parametrize(
    "data",
    [
        {"institutions": [{"appid": "a", "mch_id": "1", "api_key": "short", "sub_merchants": []}]},
        {"rates": {"usd": 1}},
        {"rules": {"no_such_rule": 1}},
        {"clock": {"speed": 0}},
        {"clock": {"speed": float("nan")}},
        {"notify": {"reply_timeout": float("inf")}},
        {"notify": {"reply_timeout": 0}},
        {"notify": {"schedule": [15, -15]}},
        {"rules": {"refund_delay": -1}},
        {"rules": {"prepay_life": 0}},
        {"rules": {"bill_ready_hour": 24}},
        {"rules": {"refund_cap": 0}},
        {
            "institutions": [
                {
                    "appid": "a",
                    "mch_id": "1",
                    "api_key": KEY,
                    "sub_merchants": [
                        {"sub_mch_id": "2", "settlement_currency": "HKD", "sub_appid": "x", "app_secret": "s"},
                        {"sub_mch_id": "2", "settlement_currency": "JPY", "sub_appid": "y", "app_secret": "s"},
                    ],
                }
            ]
        },
    ],
)
def test_bad_configs_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        SandboxConfig.from_dict(data)


def test_a_bad_config_error_never_echoes_the_key() -> None:
    leaked = "Secret" + "x" * 20
    inst = {"appid": "a", "mch_id": "1", "api_key": leaked, "sub_merchants": []}
    with pytest.raises(ConfigurationError) as info:
        SandboxConfig.from_dict({"institutions": [inst]})
    assert leaked not in str(info.value)
    assert "api_key" in str(info.value)


def test_the_sandbox_never_imports_the_client_or_the_server() -> None:
    for path in SANDBOX_SRC.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, (path.name, "relative import")  # would hide where it goes
                names = [node.module or ""]
                if node.module == "minipay":  # from minipay import Client: the SDK by another name
                    names = [f"minipay.{alias.name}" for alias in node.names]
            for name in names:
                assert not name.startswith(("minipay.client", "minipay.server", "minipay.cli")), (path.name, name)
                if name == "minipay" or name.startswith("minipay."):
                    # minipay._web holds what its pages share with the console and /try (it imports only protocol)
                    assert name.startswith(("minipay.protocol", "minipay.sandbox", "minipay._web")), (path.name, name)


def test_a_whole_payment_in_the_sandbox_never_loads_the_client_or_the_server() -> None:
    # At run time too: judging requests, paying and notifying use no SDK or service code.
    script = """
import sys
from starlette.testclient import TestClient
from minipay.protocol import build_pay_params, decode_xml, encode_xml, sign
from minipay.sandbox import create_app

KEY = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"
app = create_app(seed=1)
with TestClient(app) as http:
    openid = http.post("/sandbox/login", json={"appid": "wx1234567890abcdef", "user": "u"}).json()["openid"]
    fields = {"appid": "wx8888888888888888", "mch_id": "1900000109", "sub_mch_id": "1900000110",
              "sub_appid": "wx1234567890abcdef", "nonce_str": "n1", "body": "b", "out_trade_no": "IMP1",
              "fee_type": "HKD", "total_fee": 100, "spbill_create_ip": "127.0.0.1",
              "notify_url": "http://127.0.0.1:9/n", "trade_type": "JSAPI", "sub_openid": openid}
    fields["sign"] = sign(fields, KEY)
    answer = decode_xml(http.post("/pay/unifiedorder", content=encode_xml(fields)).content)
    params = build_pay_params(app_id="wx1234567890abcdef", prepay_id=answer["prepay_id"], key=KEY)
    assert http.post("/sandbox/pay", json=dict(params)).json()["errMsg"] == "requestPayment:ok"
    http.get("/sandbox/")
loaded = sorted(m for m in sys.modules if m.startswith(("minipay.client", "minipay.server", "minipay.cli")))
assert not loaded, loaded
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_unknown_control_paths_are_404() -> None:
    from starlette.testclient import TestClient

    with TestClient(create_app(LENIENT, seed=1, start=START)) as client:
        assert client.get("/sandbox/nope").status_code == 404
        assert client.post("/sandbox/notifications/abc/resend").status_code == 404


@pytest.mark.parametrize("name", ["state.json", "sandbox.sqlite3"])
async def test_state_file_survives_a_restart(tmp_path: Path, name: str) -> None:
    import httpx2

    from tests.sandbox.conftest import Receiver

    path = tmp_path / name  # JSON, or one row of an SQLite database (what minipay serve keeps)
    receiver = Receiver(default=(500, b"down"))
    first = create_app(
        LENIENT, seed=4, start=START, notify_transport=httpx2.ASGITransport(receiver.app()), state_file=path
    )
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(first), base_url="http://s") as http:
        sandbox = Sandbox(app=first, http=http, receiver=receiver)
        await sandbox.paid_order()
        refund = {"sub_mch_id": HKD_SUB, "out_trade_no": "ORDER0001", "out_refund_no": "R1", "total_fee": 1000}
        await sandbox.call("/secapi/pay/refund", {**refund, "refund_fee": 10})
        await sandbox.advance(20)
    from minipay.sandbox import save_state

    save_state(first.state.sandbox, path)
    second = create_app(
        LENIENT, seed=4, start=START, notify_transport=httpx2.ASGITransport(receiver.app()), state_file=path
    )
    assert second.state.sandbox.dump() == first.state.sandbox.dump()
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(second), base_url="http://s") as http:
        sandbox = Sandbox(app=second, http=http, receiver=receiver)
        answer = await sandbox.call("/pay/orderquery", {"sub_mch_id": HKD_SUB, "out_trade_no": "ORDER0001"})
        assert answer["trade_state"] == "REFUND"
        await sandbox.advance(60)
        [note] = await sandbox.notifications("ORDER0001")
        assert len(note["attempts"]) == 4
        # The id sequence continues where it stopped.
        assert (await sandbox.order("NEXT"))["result_code"] == "SUCCESS"


def test_a_corrupt_state_file_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigurationError):
        create_app(LENIENT, seed=1, state_file=path)
    not_a_database = tmp_path / "state.sqlite3"
    not_a_database.write_text("{not sqlite", encoding="utf-8")
    with pytest.raises(ConfigurationError):
        create_app(LENIENT, seed=1, state_file=not_a_database)


def test_a_real_time_clock_resumes_after_the_downtime(tmp_path: Path) -> None:
    from minipay.sandbox import SandboxConfig, save_state

    path = tmp_path / "sandbox.sqlite3"
    config = SandboxConfig.default().replace(clock={"realtime": True})
    first = create_app(config, seed=1, start=START, state_file=path)
    save_state(first.state.sandbox, path)
    document = json.loads(sqlite3.connect(path).execute("SELECT document FROM sandbox_state").fetchone()[0])
    document["saved_at"] = (datetime.fromisoformat(document["saved_at"]) - timedelta(hours=1)).isoformat()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE sandbox_state SET document = ?", (json.dumps(document),))
    second = create_app(config, seed=1, start=START, state_file=path)
    resumed = second.state.sandbox.now() - datetime.fromisoformat(document["now"])
    assert timedelta(minutes=59) < resumed < timedelta(minutes=61)


CROSS_SITE_HEADERS = [
    {"Origin": "https://attacker.invalid"},
    {"Origin": "null"},
    {"Origin": "http://apihk.mch.weixin.qq.com:8080"},  # same host, another port: another origin
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
]


@pytest.mark.parametrize("headers", CROSS_SITE_HEADERS)
async def test_a_cross_site_page_cannot_drive_the_control_api(sandbox: Sandbox, headers: dict[str, str]) -> None:
    # A page in the developer's browser can send "simple" POSTs (text/plain, no preflight): refused.
    await sandbox.order("CSRF1")
    before = (await sandbox.http.get("/sandbox/clock")).json()
    for path, body in [
        ("/sandbox/clock", '{"advance": 90000}'),
        ("/sandbox/reset", ""),
        ("/sandbox/faults", '{"endpoint": "unifiedorder", "fault": "SYSTEMERROR"}'),
    ]:
        refused = await sandbox.http.post(path, content=body, headers={**headers, "Content-Type": "text/plain"})
        assert refused.status_code == 403, path
        assert "cross-site" in refused.json()["error"]
    form = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    refused = await sandbox.http.post(
        "/sandbox/ui/pay", content=f"out_trade_no=CSRF1&sub_mch_id={HKD_SUB}", headers=form
    )
    assert refused.status_code == 403
    for action, fields in [
        ("fault", "endpoint=unifiedorder&fault=SYSTEMERROR&times=1"),
        ("advance", "seconds=90000"),
        ("faults-clear", ""),
    ]:
        assert (await sandbox.http.post(f"/sandbox/ui/{action}", content=fields, headers=form)).status_code == 403
    assert (await sandbox.http.get("/sandbox/clock")).json() == before
    assert sandbox.backend.orders[(HKD_SUB, "CSRF1")].state == "NOTPAY"
    assert sandbox.backend.faults == []
    assert sandbox.receiver.received == []
    # Reading is not refused (the browser keeps a cross-site page from seeing the answer anyway).
    assert (await sandbox.http.get("/sandbox/state", headers=headers)).status_code == 200


async def test_same_origin_dashboard_forms_and_non_browser_clients_pass_the_cross_site_guard(sandbox: Sandbox) -> None:
    await sandbox.order("SAME1")
    own = {"Origin": "http://apihk.mch.weixin.qq.com", "Sec-Fetch-Site": "same-origin"}
    paid = await sandbox.http.post(
        "/sandbox/ui/pay", data={"out_trade_no": "SAME1", "sub_mch_id": HKD_SUB}, headers=own
    )
    assert paid.status_code == 303
    assert sandbox.backend.orders[(HKD_SUB, "SAME1")].state == "SUCCESS"
    assert (await sandbox.http.post("/sandbox/clock", json={"advance": 1})).status_code == 200  # no Origin
    # The WeChat paths authenticate by signature, as WeChat does: an Origin does not matter there.
    answer = await sandbox.call("/pay/orderquery", {"sub_mch_id": HKD_SUB, "out_trade_no": "SAME1"}, headers=own)
    assert answer["trade_state"] == "SUCCESS"


async def test_the_dashboard_escapes_every_value_that_came_from_a_request(make_sandbox: MakeSandbox) -> None:
    # A receiver's reply is shown on the dashboard too: it is markup from outside.
    sandbox = make_sandbox(receiver=Receiver(default=(200, b"<script>alert(3)</script>")))
    evil = "<img src=x onerror=alert(1)>\"'&"
    await sandbox.paid_order("XSS1", body=evil, attach=evil, notify_url="http://127.0.0.1:9/<svg/onload=alert(4)>'&")
    # out_trade_no cannot carry markup (field rules): the request that tries is refused.
    assert (await sandbox.order("<b>x</b>"))["err_code"] == "PARAM_ERROR"
    page = (await sandbox.http.get("/sandbox/", params={"msg": '"><script>alert(2)</script>'})).text
    assert "<img" not in page
    assert "<script>" not in page
    assert "&lt;script&gt;alert(3)" in page  # the reply, escaped
    assert "<svg" not in page
    assert "9/&lt;svg/onload=alert(4)&gt;&#39;&amp;" in page  # the notify_url, escaped
    assert "&lt;img src=x onerror=alert(1)&gt;&#34;&#39;&amp;" in page  # the order's body, escaped
    assert "&#34;&gt;&lt;script&gt;alert(2)" in page  # the message, escaped


async def test_the_dashboard_shows_the_newest_orders_and_says_how_many_there_are(sandbox: Sandbox) -> None:
    for n in range(SHOWN + 2):
        assert (await sandbox.order(f"MANY{n:04d}"))["result_code"] == "SUCCESS"
    page = (await sandbox.http.get("/sandbox/")).text
    assert f"The newest {SHOWN} of {SHOWN + 2} orders" in page
    assert f"MANY{SHOWN + 1:04d}" in page  # the newest
    assert "MANY0002" in page
    assert "MANY0001" not in page  # the two oldest are left to /sandbox/state
    assert "MANY0000" not in page
    assert page.index(f"MANY{SHOWN + 1:04d}") < page.index("MANY0002")  # newest first
    assert len((await sandbox.http.get("/sandbox/state")).json()["orders"]) == SHOWN + 2
