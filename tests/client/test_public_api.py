"""The public surface: one curated ``__all__``, and ``Client``/``AsyncClient`` as exact twins."""

from __future__ import annotations

import inspect
import re
import sys
from typing import Any

import pytest

import minipay
import minipay.client
from minipay.client import AsyncClient, Client

EXPECTED_ALL = {
    "REGIONS",
    "AsyncClient",
    "Backoff",
    "Bill",
    "BillRow",
    "BillSummary",
    "BusinessError",
    "Client",
    "ClientCertificate",
    "ClientEvent",
    "CloseOrderResponse",
    "Code2SessionResult",
    "CommunicationError",
    "ConfigurationError",
    "ConnectError",
    "DecryptionError",
    "ExchangeRate",
    "FieldError",
    "LoginError",
    "MinipayError",
    "NotEnoughError",
    "NotificationHandler",
    "NotificationReply",
    "OrderClosedError",
    "OrderNotFoundError",
    "OrderPaidError",
    "OrderQueryResponse",
    "OutTradeNoUsedError",
    "PayParams",
    "PaymentNotification",
    "ReadTimeoutError",
    "RefundNotFoundError",
    "RefundNotification",
    "RefundQueryResponse",
    "RefundRecord",
    "RefundResponse",
    "Region",
    "ResponseSignatureError",
    "RetryDecision",
    "SignatureError",
    "TransportError",
    "UnexpectedResponseError",
    "UnifiedOrderResponse",
    "WeChatError",
    "WeChatSystemError",
    "XMLError",
    "decide",
}

# The sync/async spelling of the same thing.
TWINS = {"close": "aclose", "__enter__": "__aenter__", "__exit__": "__aexit__"}
ASYNC_TYPES = [
    (r"httpx2\.AsyncClient", "httpx2.Client"),
    (r"httpx2\.AsyncBaseTransport", "httpx2.BaseTransport"),
    (r"Callable\[\[float\], Awaitable\[None\]\]", "Callable[[float], None]"),
    (r"\bAsyncClient\b", "Client"),
]


def test_all_is_curated_and_importable() -> None:
    assert set(minipay.client.__all__) == EXPECTED_ALL
    assert len(minipay.client.__all__) == len(EXPECTED_ALL)
    for name in minipay.client.__all__:
        assert getattr(minipay.client, name) is not None


def test_the_package_root_exports_the_two_clients_lazily() -> None:
    assert minipay.Client is Client
    assert minipay.AsyncClient is AsyncClient
    assert {"Client", "AsyncClient"} <= set(minipay.__all__)


def test_private_modules_stay_private() -> None:
    modules = [name for name in sys.modules if name.startswith("minipay.client.")]
    assert modules
    assert all(name.rsplit(".", 1)[1].startswith("_") for name in modules)


def _normalise(annotation: Any) -> str:
    text = str(annotation)
    for pattern, replacement in ASYNC_TYPES:
        text = re.sub(pattern, replacement, text)
    return text


def _signature(function: Any) -> list[tuple[str, Any, Any, str]]:
    signature = inspect.signature(function)
    params = [(p.name, p.kind, p.default, _normalise(p.annotation)) for p in signature.parameters.values()]
    return [*params, ("return", None, None, _normalise(signature.return_annotation))]


def _public(cls: type) -> dict[str, Any]:
    return {name: member for name, member in inspect.getmembers(cls) if not name.startswith("_")}


def test_sync_and_async_clients_have_the_same_public_methods_and_signatures() -> None:
    sync_members = _public(Client)
    async_members = _public(AsyncClient)
    assert set(sync_members) - {"close"} == set(async_members) - {"aclose"}
    for name, member in sync_members.items():
        twin = async_members[TWINS.get(name, name)]
        if isinstance(member, property):
            assert isinstance(twin, property)
            continue
        assert _signature(member) == _signature(twin), name
        is_io = name in ("code_to_session", "close")
        assert inspect.iscoroutinefunction(twin) is is_io, name
    assert _signature(Client.__init__) == _signature(AsyncClient.__init__)


@pytest.mark.parametrize("namespace", ["orders", "refunds", "bills", "rates"])
def test_resource_namespaces_are_twins(namespace: str) -> None:
    kwargs: dict[str, Any] = {
        "appid": "wx8888888888888888",
        "mch_id": "1900000109",
        "api_key": "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6",
        "base_url": "http://sandbox",
    }
    sync_ns = type(getattr(Client(**kwargs), namespace))
    async_ns = type(getattr(AsyncClient(**kwargs), namespace))
    sync_methods = _public(sync_ns)
    async_methods = _public(async_ns)
    assert set(sync_methods) == set(async_methods)
    assert sync_methods
    for name, method in sync_methods.items():
        assert _signature(method) == _signature(async_methods[name]), f"{namespace}.{name}"
        assert not inspect.iscoroutinefunction(method)
        assert inspect.iscoroutinefunction(async_methods[name])


def test_a_client_repr_never_shows_the_api_key() -> None:
    client = Client(appid="wx8888888888888888", mch_id="1900000109", api_key="a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6")
    assert "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6" not in repr(client)
    assert "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6" not in repr(client._core)
    assert "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6" not in repr(vars(client))
    client.close()
