"""docs/client.md stays true: its Python examples compile and call only real methods with real arguments."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from minipay.client import AsyncClient, Client, ClientCertificate, NotificationHandler

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def _guide_blocks() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    guide = text[: text.index("\n## Reference\n")]  # the guide opens the page; the reference follows it
    return re.findall(r"```python\n(.*?)```", guide, flags=re.S)


def _methods() -> dict[str, inspect.Signature]:
    client = Client(appid="wx8888888888888888", mch_id="1900000109", api_key="a" * 32, base_url="http://x")
    found: dict[str, inspect.Signature] = {}
    for namespace in ("orders", "refunds", "bills", "rates"):
        for name, method in inspect.getmembers(getattr(client, namespace), inspect.ismethod):
            if not name.startswith("_"):
                found[f"{namespace}.{name}"] = inspect.signature(method)
    for name in ("code_to_session", "pay_params", "parse_payment_notification", "parse_refund_notification"):
        found[name] = inspect.signature(getattr(client, name))
    for name in ("payment", "refund", "apayment", "arefund"):
        found[name] = inspect.signature(getattr(NotificationHandler, name))
    found["from_p12"] = inspect.signature(ClientCertificate.from_p12)
    found["from_pem"] = inspect.signature(ClientCertificate.from_pem)
    found["Client"] = inspect.signature(Client)
    found["AsyncClient"] = inspect.signature(AsyncClient)
    client.close()
    return found


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return "?"


@pytest.mark.parametrize("block", _guide_blocks())
def test_each_python_example_compiles(block: str) -> None:
    compile(block, str(DOC), "exec")


def test_the_examples_call_real_methods_with_real_keywords() -> None:
    methods = _methods()
    checked = 0
    for block in _guide_blocks():
        for node in ast.walk(ast.parse(block)):
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            key = next((k for k in methods if name == k or name.endswith("." + k)), None)
            if key is None:
                continue
            params = methods[key].parameters
            for keyword in node.keywords:
                if keyword.arg is not None:
                    assert keyword.arg in params, f"{name}(... {keyword.arg}=...) in docs/client.md"
            checked += 1
    assert checked >= 15


# --- the FastAPI notification example runs as written --------------------------------------------


def _fastapi_block() -> str:
    [block] = [b for b in _guide_blocks() if b.startswith("from fastapi import")]
    # The example elides the settings (``appid=...``); the rest runs verbatim.
    settings = (
        'AsyncClient(appid="wx8888888888888888", mch_id="1900000109", '
        'api_key="a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6", sub_mch_id="1900000110", sub_appid="wx1234567890abcdef")'
    )
    code, replaced = re.subn(r"AsyncClient\(appid=\.\.\.[^\n]*\)", settings, block)
    assert replaced == 1
    return code


def test_the_fastapi_notification_example_acknowledges_real_notifications_and_refuses_forgeries() -> None:
    from starlette.testclient import TestClient

    from minipay.protocol import build_payment_notification, build_refund_notification, reply_success
    from tests.client.test_pure import PAYMENT

    applied: list[tuple[object, ...]] = []

    class Store:
        async def apply_once(self, *args: object) -> None:
            applied.append(args)

    namespace: dict[str, object] = {"payments": Store(), "refunds": Store()}
    exec(compile(_fastapi_block(), str(DOC), "exec"), namespace)
    key = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"
    refund_body = build_refund_notification(
        {"return_code": "SUCCESS", "appid": "wx8888888888888888", "mch_id": "1900000109", "nonce_str": "n1"},
        {
            "transaction_id": PAYMENT["transaction_id"],
            "out_trade_no": PAYMENT["out_trade_no"],
            "refund_id": "50000000012024010200000000001",
            "out_refund_no": "REFUND20240102000001",
            "total_fee": 1000,
            "refund_fee": 500,
            "settlement_refund_fee": 500,
            "refund_status": "SUCCESS",
            "success_time": "2024-01-02 10:00:00",
            "refund_recv_accout": "支付用户零钱",
            "refund_account": "REFUND_SOURCE_UNSETTLED_FUNDS",
            "refund_request_source": "API",
        },
        key,
    )
    with TestClient(namespace["app"]) as http:  # type: ignore[arg-type]
        paid = http.post("/wxpay/notify", content=build_payment_notification(PAYMENT, key))
        forged = http.post("/wxpay/notify", content=build_payment_notification(PAYMENT, "Z" * 32))
        failed = PAYMENT | {"result_code": "FAIL", "err_code": "SYSTEMERROR", "err_code_des": "x"}
        not_paid = http.post("/wxpay/notify", content=build_payment_notification(failed, key))
        refunded = http.post("/wxpay/refund-notify", content=refund_body)
    assert (paid.status_code, paid.content) == (200, reply_success())
    assert paid.headers["content-type"].startswith("text/xml")
    assert forged.status_code == 400
    assert b"FAIL" in forged.content
    assert refunded.status_code == 200
    assert not_paid.status_code == 200  # acknowledged, and not applied as a payment
    assert applied == [
        (PAYMENT["out_trade_no"], PAYMENT["transaction_id"], 1000, "HKD"),
        ("REFUND20240102000001", "SUCCESS"),
    ]


# --- the README's "SDK in a few lines" ------------------------------------------------------------


def test_the_readme_sdk_snippet_binds_to_the_real_signatures() -> None:
    readme = (DOC.parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### SDK in a few lines") :]
    block = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert block is not None
    methods = _methods()
    bound = set()
    for node in ast.walk(ast.parse(block.group(1))):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        key = next((k for k in methods if name == k or name.endswith("." + k)), None)
        if key is None:
            continue
        # Every argument, positional or keyword, required ones included, must bind.
        methods[key].bind(*node.args, **{kw.arg: kw.value for kw in node.keywords if kw.arg is not None})
        bound.add(key)
    assert {"Client", "from_p12", "code_to_session", "orders.create", "pay_params", "orders.query"} <= bound
    assert "parse_payment_notification" in bound
