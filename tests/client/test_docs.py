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
    guide = text[text.index("# User guide") :]
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
