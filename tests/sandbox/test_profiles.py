"""The strict profile: each rule refused in strict, allowed in lenient, and switchable on its own."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from minipay.protocol import ConfigurationError, decode_xml, format_wx_time
from minipay.sandbox import SandboxConfig
from tests.profiles import LENIENT, STRICT, STRICT_IN_PROCESS
from tests.sandbox.conftest import START, MakeSandbox, Sandbox
from tests.sandbox.test_refunds import refund

pytestmark = pytest.mark.anyio

#: Strict, synchronous notifications (the rule tests below look at one rule at a time).
STRICT_SYNC = STRICT_IN_PROCESS.replace(notify={"asynchronous": False})


def with_rules(config: SandboxConfig, **rules: Any) -> SandboxConfig:
    return config.replace(rules={**config.rules.model_dump(), **rules})


def test_the_profile_sets_every_switch_left_unset_and_an_explicit_value_wins() -> None:
    strict, lenient = STRICT.effective, LENIENT.effective
    assert (strict.cny_pool, strict.refund_spacing, strict.time_expire_min_gap) == (True, 60, 300)
    assert (lenient.cny_pool, lenient.refund_spacing, lenient.time_expire_min_gap) == (False, 0, 60)
    for name in ("return_layer_param_errors", "byte_lengths", "full_refund_error", "asynchronous_notify",
                 "require_client_cert"):  # fmt: skip
        assert (getattr(strict, name), getattr(lenient, name)) == (True, False), name
    assert (strict.sign_type_in_notify, lenient.sign_type_in_notify) == ("md5", "always")
    assert SandboxConfig.default().effective == lenient  # the Python API's default
    assert with_rules(STRICT, cny_pool=False).effective.cny_pool is False
    assert with_rules(LENIENT, refund_spacing=60).effective.refund_spacing == 60
    toml_like = SandboxConfig.from_dict({"rules": {"profile": "lenient"}})
    assert toml_like.with_profile(None) is toml_like  # the file's profile beats the commands' default
    assert SandboxConfig.default().with_profile(None).effective.profile == "strict"
    with pytest.raises(ConfigurationError, match="profile"):
        SandboxConfig.default().with_profile("relaxed")


async def test_missing_field_fails_at_the_return_layer_in_strict(make_sandbox: MakeSandbox) -> None:
    strict = make_sandbox(STRICT_SYNC)
    answer = await strict.order(body="")
    assert answer == {"return_code": "FAIL", "return_msg": "缺少参数body"}  # unsigned, no result layer
    lenient = make_sandbox(LENIENT)
    answer = await lenient.order(body="")
    assert (answer["return_code"], answer["result_code"], answer["err_code"]) == ("SUCCESS", "FAIL", "LACK_PARAMS")
    assert "sign" in answer


async def test_over_long_field_fails_at_the_return_layer_in_strict(make_sandbox: MakeSandbox) -> None:
    strict = make_sandbox(STRICT_SYNC)
    assert await strict.order(attach="a" * 128) == {"return_code": "FAIL", "return_msg": "attach参数长度有误"}
    lenient = make_sandbox(LENIENT)
    answer = await lenient.order(attach="a" * 128)
    assert (answer["result_code"], answer["err_code"]) == ("FAIL", "PARAM_ERROR")
    # Business errors stay at the result layer in strict too.
    business = await strict.order(fee_type="EUR")
    assert (business["return_code"], business["result_code"], business["err_code"]) == (
        "SUCCESS", "FAIL", "PARAM_ERROR",
    )  # fmt: skip


async def test_body_counts_utf8_bytes_in_strict(make_sandbox: MakeSandbox) -> None:
    body = "咖" * 43  # 43 characters, 129 bytes of UTF-8
    strict = make_sandbox(STRICT_SYNC)
    assert await strict.order(body=body) == {"return_code": "FAIL", "return_msg": "body参数长度有误"}
    on_its_own = make_sandbox(with_rules(LENIENT, byte_lengths=True))  # result layer, bytes
    answer = await on_its_own.order(body=body)
    assert (answer["err_code"], "bytes" in answer["err_code_des"]) == ("PARAM_ERROR", True)
    lenient = make_sandbox(LENIENT)
    assert (await lenient.order(body=body))["result_code"] == "SUCCESS"
    assert (await strict.order("ORDER0002", body="咖" * 42))["result_code"] == "SUCCESS"  # 126 bytes


async def test_time_expire_at_least_five_minutes_after_time_start_in_strict(make_sandbox: MakeSandbox) -> None:
    fields = {"time_start": format_wx_time(START), "time_expire": format_wx_time(START + timedelta(minutes=2))}
    strict = make_sandbox(STRICT_SYNC)
    answer = await strict.order(**fields)
    assert (answer["err_code"], answer["err_code_des"].startswith("time_expire时间过短")) == ("PARAM_ERROR", True)
    assert (await make_sandbox(LENIENT).order(**fields))["result_code"] == "SUCCESS"
    five = {**fields, "time_expire": format_wx_time(START + timedelta(minutes=5))}
    assert (await strict.order("ORDER0002", **five))["result_code"] == "SUCCESS"


async def test_refunds_of_one_order_sixty_seconds_apart_in_strict(make_sandbox: MakeSandbox) -> None:
    for config, second in ((STRICT_SYNC, "FREQUENCY_LIMITED"), (LENIENT, None)):
        sandbox = make_sandbox(config)
        await sandbox.paid_order()
        assert (await refund(sandbox, "R1", 100))["result_code"] == "SUCCESS"
        await sandbox.advance(1)
        answer = await refund(sandbox, "R2", 100)
        assert answer.get("err_code") == second, answer
    await sandbox.advance(60)
    strict = make_sandbox(STRICT_SYNC)
    await strict.paid_order()
    await refund(strict, "R1", 100)
    await strict.advance(60)
    assert (await refund(strict, "R2", 100))["result_code"] == "SUCCESS"


async def test_a_fully_refunded_order_answers_error_in_strict(make_sandbox: MakeSandbox) -> None:
    for config, code, text in ((STRICT_SYNC, "ERROR", "订单已全额退款"), (LENIENT, "PARAM_ERROR", "可退金额")):
        sandbox = make_sandbox(config)
        await sandbox.paid_order()
        assert (await refund(sandbox, "R1", 1000))["result_code"] == "SUCCESS"
        await sandbox.advance(61)
        answer = await refund(sandbox, "R2", 1)
        assert (answer["err_code"], text in answer["err_code_des"]) == (code, True), answer


async def test_notenough_without_the_days_cny_takings_then_success_another_day(make_sandbox: MakeSandbox) -> None:
    strict = make_sandbox(STRICT_SYNC)
    await strict.paid_order()
    await strict.advance(86400)  # the next China day: no CNY taken yet
    assert (await refund(strict, "R1", 1000))["err_code"] == "NOTENOUGH"
    await strict.advance(86400)
    await strict.paid_order("ORDER0002", total_fee=2000)  # takings of that day fund the refund
    again = await refund(strict, "R1", 1000)  # the same out_refund_no
    assert again["result_code"] == "SUCCESS", again
    lenient = make_sandbox(LENIENT)
    await lenient.paid_order()
    await lenient.advance(86400)
    assert (await refund(lenient, "R1", 1000))["result_code"] == "SUCCESS"


@pytest.mark.parametrize("sign_type", ["HMAC-SHA256", "MD5"])
async def test_hmac_payment_notifications_omit_sign_type_in_strict(make_sandbox: MakeSandbox, sign_type: str) -> None:
    for config, expected in ((STRICT_SYNC, sign_type == "MD5"), (LENIENT, True)):
        sandbox = make_sandbox(config)
        await sandbox.paid_order(sign_type=sign_type)
        sent = decode_xml(sandbox.receiver.received[0])
        assert ("sign_type" in sent) is expected, (config.effective.profile, sent)
        assert len(sent["sign"]) == (64 if sign_type == "HMAC-SHA256" else 32)
    explicit = make_sandbox(STRICT_SYNC.replace(notify={"asynchronous": False, "include_sign_type": True}))
    await explicit.paid_order(sign_type=sign_type)
    assert "sign_type" in decode_xml(explicit.receiver.received[0])


async def test_the_cashier_answers_before_the_notification_in_strict(make_sandbox: MakeSandbox) -> None:
    config = STRICT_IN_PROCESS.replace(notify={"first_delay": (0.2, 0.4)})
    strict: Sandbox = make_sandbox(config)
    await strict.paid_order()
    assert strict.receiver.received == []  # /sandbox/pay answered first
    [note] = await strict.notifications("ORDER0001")
    assert note["attempts"] == []
    for _ in range(50):
        await asyncio.sleep(0.05)
        if strict.receiver.received:
            break
    assert len(strict.receiver.received) == 1
    [note] = await strict.notifications("ORDER0001")
    assert note["state"] == "delivered"
    lenient = make_sandbox(LENIENT)
    await lenient.paid_order()
    assert len(lenient.receiver.received) == 1  # delivered before /sandbox/pay answered


async def test_an_asynchronous_first_delivery_waits_even_when_the_clock_moves(make_sandbox: MakeSandbox) -> None:
    strict = make_sandbox(STRICT_IN_PROCESS.replace(notify={"first_delay": (0.3, 0.3)}))
    await strict.paid_order()
    await strict.advance(5)  # a clock move does not release it early (nor loop on it)
    assert strict.receiver.received == []
    await asyncio.sleep(0.5)
    assert len(strict.receiver.received) == 1
