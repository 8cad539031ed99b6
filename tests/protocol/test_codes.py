"""The error-code table and check_response: the order of judgement, the classes, the flags."""

from __future__ import annotations

import pytest

from minipay.protocol import (
    ERROR_CODES,
    LOGIN_ERRCODES,
    OPERATION_TABLE,
    OPERATIONS,
    BizerrNeedRetryError,
    BusinessError,
    CommunicationError,
    InvalidRequestError,
    LackParamsError,
    LoginError,
    NotEnoughError,
    OrderClosedError,
    OrderNotFoundError,
    OrderPaidError,
    OutTradeNoUsedError,
    ParamError,
    RefundNotFoundError,
    SignatureError,
    SignPolicy,
    TradeStateError,
    UnexpectedResponseError,
    WeChatError,
    WeChatSignError,
    WeChatSystemError,
    business_error,
    check_response,
    describe_code,
    describe_login_errcode,
    login_error,
    sign,
)
from tests.protocol import vectors as v

IDS = {"mch_id": v.MCH_ID, "sub_mch_id": v.SUB_MCH_ID, "out_trade_no": v.OUT_TRADE_NO}


def _signed(fields: dict[str, str], sign_type: str = "MD5") -> dict[str, str]:
    base = {"return_code": "SUCCESS", "return_msg": "OK", "appid": v.APPID, "mch_id": v.MCH_ID, "nonce_str": "n1"}
    base.update(fields)
    base["sign"] = sign(base, v.KEY, sign_type)
    return base


def _fail(err_code: str, des: str = "描述") -> dict[str, str]:
    return _signed({"result_code": "FAIL", "err_code": err_code, "err_code_des": des})


MUTATING = sorted(op.wire for op in OPERATION_TABLE.values() if not op.idempotent)


def test_operations_are_named_after_their_paths() -> None:
    assert OPERATION_TABLE["unifiedorder"].path == "/pay/unifiedorder"
    assert OPERATION_TABLE["refund"].path == "/secapi/pay/refund"
    assert OPERATION_TABLE["queryexchagerate"].path == "/pay/queryexchagerate"
    for wire, op in OPERATION_TABLE.items():
        assert op.wire == wire == op.path.rsplit("/", 1)[1]
    assert set(OPERATION_TABLE) == OPERATIONS | {"jscode2session"}
    assert MUTATING == ["closeorder", "refund", "unifiedorder"]
    assert [op.wire for op in OPERATION_TABLE.values() if op.mtls] == ["refund"]


def test_the_old_operation_names_still_work_with_a_deprecation_warning() -> None:
    import minipay.protocol as protocol

    with pytest.warns(DeprecationWarning, match="OPERATION_PATHS"):
        paths = protocol.OPERATION_PATHS  # type: ignore[attr-defined]
    assert paths == {op.wire: op.path for op in OPERATION_TABLE.values() if op.wire in OPERATIONS}
    with pytest.warns(DeprecationWarning, match="MUTATING_OPERATIONS"):
        assert frozenset(MUTATING) == protocol.MUTATING_OPERATIONS  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("operation", "code", "cls"),
    [
        ("unifiedorder", "SYSTEMERROR", WeChatSystemError),
        ("orderquery", "SYSTEMERROR", WeChatSystemError),
        ("unifiedorder", "ORDERPAID", OrderPaidError),
        ("closeorder", "ORDERPAID", OrderPaidError),
        ("unifiedorder", "ORDERCLOSED", OrderClosedError),
        ("unifiedorder", "OUT_TRADE_NO_USED", OutTradeNoUsedError),
        ("unifiedorder", "INVALID_REQUEST", InvalidRequestError),
        ("orderquery", "ORDERNOTEXIST", OrderNotFoundError),
        ("refundquery", "REFUNDNOTEXIST", RefundNotFoundError),
        ("refund", "NOTENOUGH", NotEnoughError),
        ("refund", "NOT_ENOUGH", NotEnoughError),
        ("refund", "PARAM_ERROR", ParamError),
        ("unifiedorder", "LACK_PARAMS", LackParamsError),
        ("orderquery", "SIGNERROR", WeChatSignError),
        ("closeorder", "TRADE_STATE_ERROR", TradeStateError),
        ("refund", "BIZERR_NEED_RETRY", BizerrNeedRetryError),
    ],
)
def test_each_code_raises_its_own_class(operation: str, code: str, cls: type[BusinessError]) -> None:
    with pytest.raises(cls) as info:
        check_response(operation, _fail(code), key=v.KEY, ids=IDS)
    error = info.value
    assert isinstance(error, BusinessError)
    assert isinstance(error, WeChatError)
    assert error.operation == operation
    assert error.err_code == code
    assert error.err_code_des == "描述"
    assert error.ids == IDS
    assert error.out_trade_no == v.OUT_TRADE_NO
    info_row = describe_code(operation, code)
    assert error.retryable is info_row.retryable
    assert error.outcome_unknown is info_row.outcome_unknown
    assert v.OUT_TRADE_NO in str(error)
    assert operation in str(error)
    assert code in str(error)


@pytest.mark.parametrize("operation", MUTATING)
def test_system_error_on_a_write_leaves_the_outcome_unknown(operation: str) -> None:
    info = describe_code(operation, "SYSTEMERROR")
    assert info.retryable
    assert info.auto_retry
    assert info.outcome_unknown


@pytest.mark.parametrize("operation", ["orderquery", "refundquery", "downloadbill", "queryexchagerate"])
def test_system_error_on_a_read_is_just_retryable(operation: str) -> None:
    info = describe_code(operation, "SYSTEMERROR")
    assert info.retryable
    assert info.auto_retry
    assert not info.outcome_unknown


def test_refund_not_enough_is_retried_later_not_immediately() -> None:
    info = describe_code("refund", "NOTENOUGH")
    assert info.retryable
    assert not info.auto_retry
    assert not info.outcome_unknown
    assert describe_code("refund", "NOT_ENOUGH").retryable


def test_not_enough_at_unified_order_is_the_users_balance_and_not_retryable() -> None:
    assert not describe_code("unifiedorder", "NOTENOUGH").retryable


def test_order_paid_is_final_not_retryable() -> None:
    info = describe_code("closeorder", "ORDERPAID")
    assert not info.retryable
    assert not info.outcome_unknown
    assert "paid" in info.action


def test_unknown_code_on_a_write_is_conservative() -> None:
    info = describe_code("refund", "SOMETHING_NEW")
    assert not info.known
    assert not info.retryable
    assert info.outcome_unknown
    assert info.error is BusinessError
    read = describe_code("orderquery", "SOMETHING_NEW")
    assert not read.outcome_unknown


def test_unknown_code_raises_plain_business_error() -> None:
    with pytest.raises(BusinessError) as info:
        check_response("unifiedorder", _fail("BRAND_NEW_CODE"), key=v.KEY)
    assert type(info.value) is BusinessError
    assert info.value.outcome_unknown


def test_every_table_row_is_consistent() -> None:
    for (operation, code), info in ERROR_CODES.items():
        assert operation in OPERATIONS
        assert info.operation == operation
        assert info.err_code == code
        assert info.meaning
        assert info.action
        assert issubclass(info.error, BusinessError)
        assert not info.auto_retry or info.retryable


def test_business_error_can_be_built_for_the_sandbox_and_sdk_alike() -> None:
    error = business_error("refund", "NOTENOUGH", "余额不足", ids={"out_refund_no": "R1"})
    assert isinstance(error, NotEnoughError)
    assert error.retryable
    assert error.out_refund_no == "R1"


def test_return_code_fail_is_a_communication_error_without_signature() -> None:
    with pytest.raises(CommunicationError) as info:
        check_response("unifiedorder", {"return_code": "FAIL", "return_msg": "签名错误"}, key=v.KEY, ids=IDS)
    assert info.value.return_msg == "签名错误"
    assert not info.value.retryable


def test_missing_return_code_is_unexpected() -> None:
    with pytest.raises(UnexpectedResponseError):
        check_response("orderquery", {"foo": "bar"}, key=v.KEY)


def test_signature_is_checked_before_result_code_is_believed() -> None:
    forged = _fail("ORDERPAID")
    forged["err_code"] = "ORDERCLOSED"  # changed after signing
    with pytest.raises(SignatureError):
        check_response("unifiedorder", forged, key=v.KEY)


def test_missing_signature_on_a_success_is_refused() -> None:
    fields = _signed({"result_code": "SUCCESS", "prepay_id": "wx1"})
    del fields["sign"]
    with pytest.raises(SignatureError, match="missing"):
        check_response("unifiedorder", fields, key=v.KEY)


def test_missing_signature_on_a_business_failure_is_refused() -> None:
    fields = _fail("SYSTEMERROR")
    del fields["sign"]
    with pytest.raises(SignatureError):
        check_response("unifiedorder", fields, key=v.KEY)


def test_response_claiming_another_algorithm_than_the_request_is_refused() -> None:
    fields = _signed({"result_code": "SUCCESS", "sign_type": "MD5"})
    with pytest.raises(SignatureError, match="request used HMAC-SHA256"):
        check_response("orderquery", fields, key=v.KEY, sign_type="HMAC-SHA256")


def test_md5_response_to_a_hmac_request_is_refused() -> None:
    fields = _signed({"result_code": "SUCCESS"})
    with pytest.raises(SignatureError):
        check_response("orderquery", fields, key=v.KEY, sign_type="HMAC-SHA256")


def test_hmac_response_passes_a_pinned_policy() -> None:
    fields = _signed({"result_code": "SUCCESS", "sign_type": "HMAC-SHA256"}, "HMAC-SHA256")
    result = check_response(
        "orderquery", fields, key=v.KEY, sign_type="HMAC-SHA256", policy=SignPolicy(pinned="HMAC-SHA256")
    )
    assert result["result_code"] == "SUCCESS"


def test_md5_response_is_refused_by_a_pinned_policy() -> None:
    fields = _signed({"result_code": "SUCCESS"})
    with pytest.raises(SignatureError, match="refused"):
        check_response("orderquery", fields, key=v.KEY, sign_type=None, policy=SignPolicy(pinned="HMAC-SHA256"))


def test_exchange_rate_answer_has_no_result_code() -> None:
    fields = _signed({"fee_type": "HKD", "rate": "92000000", "rate_time": "20240101"})
    assert check_response("queryexchagerate", fields, key=v.KEY)["rate"] == "92000000"


def test_missing_result_code_elsewhere_is_unexpected_and_unknown_for_writes() -> None:
    with pytest.raises(UnexpectedResponseError) as info:
        check_response("refund", _signed({}), key=v.KEY)
    assert info.value.outcome_unknown


def test_login_error_table() -> None:
    assert login_error(-1, "system error").retryable
    assert login_error(45011, "quota").retryable
    for code in (40029, 40163, 40226):
        error = login_error(code, "x")
        assert isinstance(error, LoginError)
        assert not error.retryable
    assert set(LOGIN_ERRCODES) == {-1, 40029, 40163, 45011, 40226}
    assert not describe_login_errcode(99999).retryable


def test_code_info_gives_the_wire_description_for_the_sandbox() -> None:
    assert describe_code("unifiedorder", "ORDERPAID").err_code_des == "该订单已支付"
    assert describe_code("refund", "NOTENOUGH").err_code_des == "余额不足"


def test_every_code_of_the_table_raises_its_class_with_its_flags() -> None:
    for (operation, code), info in ERROR_CODES.items():
        with pytest.raises(BusinessError) as raised:
            check_response(operation, _fail(code), key=v.KEY, ids=IDS)
        error = raised.value
        assert type(error) is info.error, (operation, code)
        assert error.retryable is info.retryable, (operation, code)
        assert error.outcome_unknown is info.outcome_unknown, (operation, code)


# The spec's error tables (5.3, 8.4, 9, 10.4, 11), copied in independently of the code's table:
# (operation, err_code) -> (retryable with the same parameters, outcome unknown, resent at once).
# "retryable" follows each row's caller action: "Retry" / "retry later with the same number" /
# "wait >= 1 minute" / "slow down" are retryable; "Fix ..." / "Treat as paid" / "Refund offline" are not.
_COMMON = ("SIGNERROR", "XML_FORMAT_ERROR", "REQUIRE_POST_METHOD", "APPID_NOT_EXIST", "MCHID_NOT_EXIST")
_FIX = (False, False, False)
_SPEC_TABLE: dict[tuple[str, str], tuple[bool, bool, bool]] = {
    **{("unifiedorder", code): _FIX for code in (*_COMMON, "APPID_MCHID_NOT_MATCH", "LACK_PARAMS", "POST_DATA_EMPTY",
                                                 "NOT_UTF8", "NOAUTH", "NOTENOUGH", "ORDERPAID", "ORDERCLOSED",
                                                 "OUT_TRADE_NO_USED", "INVALID_REQUEST")},
    ("unifiedorder", "SYSTEMERROR"): (True, True, True),
    **{("orderquery", code): _FIX for code in (*_COMMON, "APPID_MCHID_NOT_MATCH", "LACK_PARAMS", "POST_DATA_EMPTY",
                                               "NOT_UTF8", "ORDERNOTEXIST")},
    ("orderquery", "SYSTEMERROR"): (True, False, True),
    **{("closeorder", code): _FIX for code in ("SIGNERROR", "REQUIRE_POST_METHOD", "XML_FORMAT_ERROR", "ORDERPAID",
                                               "ORDERCLOSED", "ORDERNOTEXIST")},
    ("closeorder", "SYSTEMERROR"): (True, True, True),
    ("closeorder", "TRADE_STATE_ERROR"): (True, False, False),
    **{("refund", code): _FIX for code in (*_COMMON, "TRADE_OVERDUE", "USER_ACCOUNT_ABNORMAL",
                                           "INVALID_TRANSACTIONID", "PARAM_ERROR", "ORDERNOTEXIST")},
    ("refund", "SYSTEMERROR"): (True, True, True),
    ("refund", "BIZERR_NEED_RETRY"): (True, False, True),
    ("refund", "ERROR"): (False, True, False),  # "act on the description": query before a new refund
    ("refund", "INVALID_REQ_TOO_MUCH"): (True, False, False),
    ("refund", "NOTENOUGH"): (True, False, False),
    ("refund", "NOT_ENOUGH"): (True, False, False),
    ("refund", "FREQUENCY_LIMITED"): (True, False, False),
    **{("refundquery", code): _FIX for code in (*_COMMON, "REFUNDNOTEXIST", "INVALID_TRANSACTIONID", "PARAM_ERROR")},
    ("refundquery", "SYSTEMERROR"): (True, False, True),
}  # fmt: skip


@pytest.mark.parametrize(("operation", "code"), sorted(_SPEC_TABLE))
def test_the_table_holds_every_code_of_the_spec_with_its_caller_action(operation: str, code: str) -> None:
    retryable, outcome_unknown, auto_retry = _SPEC_TABLE[(operation, code)]
    info = describe_code(operation, code)
    assert info.known, f"{operation}/{code} is in the spec but not in the table"
    assert (info.retryable, info.outcome_unknown, info.auto_retry) == (retryable, outcome_unknown, auto_retry)
    assert info.error is not BusinessError or code == "ERROR"


@pytest.mark.parametrize("text", ["", "１０００", "²", "1e3", " 1", "1" * 19, "+1"])
def test_the_wire_integer_parser_takes_only_bounded_ascii_digits(text: str) -> None:
    from minipay.protocol import FieldError, parse_wire_int

    with pytest.raises(FieldError, match="total_fee"):
        parse_wire_int(text, "total_fee")


def test_the_wire_integer_parser_takes_a_sign_only_when_asked() -> None:
    from minipay.protocol import FieldError, parse_wire_int

    assert parse_wire_int("1" * 18, "n") == int("1" * 18)
    assert parse_wire_int("-5", "n") == -5
    with pytest.raises(FieldError, match="non-negative"):
        parse_wire_int("-5", "n", negative=False)
