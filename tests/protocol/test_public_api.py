"""minipay.protocol: the pinned public surface, and its purity (no I/O, no other minipay part)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import minipay.protocol

PROTOCOL_DIR = Path(minipay.protocol.__file__).parent

EXPECTED_ALL = [
    "BILL_COLUMNS", "CHINA_TZ", "COMMON_REQUEST_FIELDS", "DEFAULT_CURRENCIES", "DEFAULT_MAX_BILL_BYTES",
    "DEFAULT_MAX_BYTES", "ERROR_CODES", "HMAC_SHA256", "LOGIN_ERRCODES", "MD5",
    "OPERATIONS", "OPERATION_TABLE", "RATE_SCALE", "REFUND_NOTIFICATION_OUTER_FIELDS", "SUMMARY_COLUMNS",
    "ApiKey", "AppIdMchIdNotMatchError", "AppIdNotExistError", "Bill", "BillRow", "BillSummary",
    "BizerrNeedRetryError", "BusinessError", "CloseOrderRequest", "CloseOrderResponse", "Code2SessionResult",
    "CodeInfo", "CommunicationError", "ConfigurationError", "ConnectError", "Coupon", "CurrencyTable",
    "DecryptionError", "DownloadBillRequest", "ExchangeRateRequest", "ExchangeRateResponse", "FieldError",
    "FrequencyLimitedError", "InvalidReqTooMuchError", "InvalidRequestError", "InvalidTransactionIdError",
    "KeyLookup", "LackParamsError", "LoginCodeInfo", "LoginError", "MchIdNotExistError", "MinipayError", "NoAuthError",
    "NotEnoughError", "NotUtf8Error", "Operation", "OperationName", "OrderClosedError", "OrderNotFoundError",
    "OrderPaidError",
    "OrderQueryRequest", "OrderQueryResponse", "OutTradeNoUsedError", "ParamError", "PayParams",
    "PaymentNotification", "PostDataEmptyError", "ReadTimeoutError", "RefundCoupon", "RefundNotFoundError",
    "RefundNotification", "RefundQueryRequest", "RefundQueryResponse", "RefundRecord", "RefundRequest",
    "RefundResponse", "ReportRequest", "RequirePostMethodError", "ResponseSignatureError", "Secret", "SignPolicy",
    "SignType", "SignatureError", "SignatureExplanation", "TradeOverdueError", "TradeStateError", "TransportError",
    "UnexpectedResponseError", "UnifiedOrderRequest", "UnifiedOrderResponse", "UserAccountAbnormalError",
    "WeChatError", "WeChatRequest", "WeChatResponse", "WeChatSignError", "WeChatSystemError", "XMLError",
    "XmlFormatError", "build_pay_params", "build_payment_notification", "build_refund_notification",
    "build_request", "business_error", "cash_fee_cny", "cash_refund_fee", "check_amount", "check_fee_type",
    "check_id", "check_ip", "check_nonce", "check_notify_url", "check_out_refund_no", "check_out_trade_no",
    "check_response", "check_text", "china_date", "decode_xml", "decrypt_req_info", "describe_code",
    "describe_login_errcode", "encode_xml", "encrypt_req_info", "explain_signature", "format_major",
    "format_wx_date", "format_wx_datetime", "format_wx_time", "from_unix", "login_error", "new_nonce",
    "parse_bill", "parse_major", "parse_payment_notification", "parse_refund_notification", "parse_wire_int",
    "parse_wx_date", "parse_wx_datetime", "parse_wx_time", "random_hex", "render_bill", "reply_fail", "reply_success",
    "require_aware", "sign", "string_to_sign", "to_unix", "verify", "verify_pay_params",
]  # fmt: skip

# Modules that do I/O or belong to other layers: the sans-I/O core must not import them.
FORBIDDEN_IMPORTS = {
    "socket", "ssl", "http", "urllib.request", "asyncio", "anyio", "selectors", "subprocess", "requests",
    "httpx", "httpx2", "httpcore", "aiohttp", "sqlalchemy", "alembic", "asyncpg", "aiosqlite", "starlette",
    "fastapi", "uvicorn", "typer", "rich", "prometheus_client", "pathlib", "shutil", "tempfile", "logging",
    "random",
}  # fmt: skip
# ``time`` is allowed: build_pay_params reads the wall clock only when no timestamp is passed.


def _isort_key(name: str) -> tuple[int, str]:
    if name.upper() == name:
        return (0, name)
    return (1, name) if name[0].isupper() else (2, name)


def test_public_names_are_pinned() -> None:
    assert minipay.protocol.__all__ == EXPECTED_ALL


def test_all_is_sorted_and_every_name_exists() -> None:
    assert minipay.protocol.__all__ == sorted(minipay.protocol.__all__, key=_isort_key)
    for name in minipay.protocol.__all__:
        assert hasattr(minipay.protocol, name), name


def test_the_acceptance_import_line_works() -> None:
    from minipay.protocol import (  # noqa: F401
        MinipayError,
        SignatureError,
        XMLError,
        decode_xml,
        encode_xml,
        sign,
        verify,
    )


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.add("minipay.protocol." + (node.module or ""))
            elif node.module:
                names.add(node.module)
    return names


def test_protocol_modules_import_no_other_minipay_part_and_nothing_that_does_io() -> None:
    files = sorted(PROTOCOL_DIR.glob("*.py"))
    assert len(files) >= 10
    for path in files:
        for name in _imports(path):
            if name == "minipay" or name.startswith("minipay."):
                assert name.startswith("minipay.protocol"), f"{path.name} imports {name}"
            top = name.split(".")[0]
            assert name not in FORBIDDEN_IMPORTS, f"{path.name} imports {name}"
            assert top not in FORBIDDEN_IMPORTS, f"{path.name} imports {name}"


def test_importing_protocol_loads_no_other_layer_at_runtime() -> None:
    code = "import sys, json, minipay.protocol; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    for layer in ("minipay.client", "minipay.server", "minipay.sandbox", "minipay.cli"):
        assert layer not in loaded, f"importing minipay.protocol loaded {layer}"
    for module in ("httpx2", "httpx", "sqlalchemy", "starlette", "fastapi", "asyncio", "anyio", "requests"):
        assert module not in loaded, f"importing minipay.protocol loaded {module}"


def test_no_source_module_imports_wechatpy() -> None:
    """wechatpy is a dev-only baseline for the benchmark; ``src/`` never imports it."""
    for path in sorted(PROTOCOL_DIR.parent.rglob("*.py")):
        for name in _imports(path):
            assert name.split(".")[0] != "wechatpy", f"{path} imports {name}"
