"""The mini program's side: login (jscode2session, spec 4) and wx.requestPayment (spec 6)."""

from __future__ import annotations

import pytest

from minipay.protocol import build_pay_params
from tests.sandbox.conftest import HKD_APP, HKD_SECRET, JPY_APP, KEY, Sandbox

pytestmark = pytest.mark.anyio


async def code2session(sandbox: Sandbox, **params: str) -> dict[str, object]:
    query = {"appid": HKD_APP, "secret": HKD_SECRET, "grant_type": "authorization_code", **params}
    response = await sandbox.http.get("/sns/jscode2session", params=query)
    assert response.status_code == 200
    data: dict[str, object] = response.json()
    return data


async def test_login_code_exchanges_once_for_the_stable_openid(sandbox: Sandbox) -> None:
    login = await sandbox.login(HKD_APP, "alice")
    assert login["expires_in"] == 300
    session = await code2session(sandbox, js_code=login["code"])
    assert session["openid"] == login["openid"]
    assert isinstance(session["session_key"], str)
    again = await sandbox.login(HKD_APP, "alice")
    assert again["openid"] == login["openid"]
    assert again["code"] != login["code"]
    assert (await sandbox.login(HKD_APP, "bob"))["openid"] != login["openid"]
    assert (await sandbox.login(JPY_APP, "alice"))["openid"] != login["openid"]


async def test_a_used_code_is_40163(sandbox: Sandbox) -> None:
    code = (await sandbox.login())["code"]
    await code2session(sandbox, js_code=code)
    assert (await code2session(sandbox, js_code=code))["errcode"] == 40163


async def test_a_code_older_than_five_minutes_is_40029(sandbox: Sandbox) -> None:
    code = (await sandbox.login())["code"]
    await sandbox.advance(300)
    assert (await code2session(sandbox, js_code=code))["errcode"] == 40029


async def test_an_unknown_code_or_a_code_of_another_app_is_40029(sandbox: Sandbox) -> None:
    assert (await code2session(sandbox, js_code="nope"))["errcode"] == 40029
    other = (await sandbox.login(JPY_APP))["code"]
    assert (await code2session(sandbox, js_code=other))["errcode"] == 40029


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"secret": "wrong"}, 40125),
        ({"appid": "wx0000000000000000"}, 40013),
        ({"appid": ""}, 41002),
        ({"secret": ""}, 41004),
        ({"js_code": ""}, 41008),
        ({"grant_type": "password"}, 40002),
    ],
)
async def test_bad_login_parameters_get_wechat_errcodes(sandbox: Sandbox, params: dict[str, str], errcode: int) -> None:
    code = (await sandbox.login())["code"]
    assert (await code2session(sandbox, **{"js_code": code, **params}))["errcode"] == errcode


async def test_login_of_an_unknown_mini_program_is_404(sandbox: Sandbox) -> None:
    response = await sandbox.http.post("/sandbox/login", json={"appid": "wx0", "user": "alice"})
    assert response.status_code == 404
    assert "unknown mini program" in response.json()["error"]


async def test_journal_never_shows_the_app_secret(sandbox: Sandbox) -> None:
    code = (await sandbox.login())["code"]
    await code2session(sandbox, js_code=code)
    journal = (await sandbox.http.get("/sandbox/requests", params={"endpoint": "jscode2session"})).json()["requests"]
    assert journal[0]["fields"]["secret"] == "<redacted>"
    assert HKD_SECRET not in str(journal)


async def test_pay_with_a_bad_pay_sign_fails_and_leaves_the_order_unpaid(sandbox: Sandbox) -> None:
    prepay = (await sandbox.order())["prepay_id"]
    params = build_pay_params(app_id=HKD_APP, prepay_id=prepay, key="Z" * 32)
    answer = (await sandbox.http.post("/sandbox/pay", json=dict(params))).json()
    assert answer["errMsg"] == "requestPayment:fail 支付验证签名失败"
    assert sandbox.backend.orders[("1900000110", "ORDER0001")].state == "NOTPAY"


async def test_pay_signed_with_the_institution_appid_instead_of_sub_appid_fails(sandbox: Sandbox) -> None:
    prepay = (await sandbox.order())["prepay_id"]
    answer = await sandbox.pay(prepay, app_id="wx8888888888888888")
    assert answer["errMsg"] == "requestPayment:fail 支付验证签名失败"


async def test_pay_with_another_sign_type_than_the_order_fails(sandbox: Sandbox) -> None:
    prepay = (await sandbox.order())["prepay_id"]
    answer = await sandbox.pay(prepay, sign_type="HMAC-SHA256")
    assert answer["errMsg"].startswith("requestPayment:fail 支付验证签名失败")


async def test_hmac_order_is_paid_with_hmac_pay_params(sandbox: Sandbox) -> None:
    prepay = (await sandbox.order(sign_type="HMAC-SHA256"))["prepay_id"]
    assert (await sandbox.pay(prepay, sign_type="HMAC-SHA256"))["errMsg"] == "requestPayment:ok"


async def test_cancel_and_fail_outcomes_leave_the_order_payable(sandbox: Sandbox) -> None:
    prepay = (await sandbox.order())["prepay_id"]
    assert (await sandbox.pay(prepay, outcome="cancel"))["errMsg"] == "requestPayment:fail cancel"
    assert (await sandbox.pay(prepay, outcome="fail"))["errMsg"].startswith("requestPayment:fail")
    assert await sandbox.notifications() == []
    ok = await sandbox.pay(prepay)
    assert ok["errMsg"] == "requestPayment:ok"
    assert len(ok["transaction_id"]) == 28


async def test_paying_twice_fails_the_second_time(sandbox: Sandbox) -> None:
    prepay = (await sandbox.order())["prepay_id"]
    await sandbox.pay(prepay)
    assert (await sandbox.pay(prepay))["errMsg"] == "requestPayment:fail 该订单已支付"


async def test_unknown_prepay_and_bad_package_fail(sandbox: Sandbox) -> None:
    assert (await sandbox.pay("wx2024"))["errMsg"] == "requestPayment:fail prepay_id无效"
    answer = (await sandbox.http.post("/sandbox/pay", json={"package": "nope"})).json()
    assert answer["errMsg"].startswith("requestPayment:fail")


async def test_pay_rejects_an_unknown_outcome_and_a_non_json_body(sandbox: Sandbox) -> None:
    prepay = (await sandbox.order())["prepay_id"]
    response = await sandbox.http.post("/sandbox/pay", json={"package": f"prepay_id={prepay}", "outcome": "maybe"})
    assert response.status_code == 400
    assert (await sandbox.http.post("/sandbox/pay", content=b"[1]")).status_code == 400


async def test_a_payer_without_enough_balance_cannot_pay(make_sandbox: object) -> None:
    from minipay.sandbox import SandboxConfig

    sandbox = make_sandbox(SandboxConfig.from_dict({"rules": {"payer_balance": 100}}))  # type: ignore[operator]
    prepay = (await sandbox.order())["prepay_id"]
    assert (await sandbox.pay(prepay))["errMsg"] == "requestPayment:fail 余额不足"


async def test_pay_params_are_checked_with_the_key(sandbox: Sandbox) -> None:
    # Same five fields as the spec's sign-again vector shape, signed with the sandbox key: accepted.
    prepay = (await sandbox.order())["prepay_id"]
    params = build_pay_params(app_id=HKD_APP, prepay_id=prepay, key=KEY, timestamp=1704067200, nonce="e61463f8")
    assert (await sandbox.http.post("/sandbox/pay", json=dict(params))).json()["errMsg"] == "requestPayment:ok"
