"""The table of WeChat Pay v2 operations: path, wire name and how each is sent and answered.

One row per API (spec 2.1, 4-15), read by the SDK (where to send, whether a retry is safe, whether
the answer is signed) and by the sandbox (its route table and answer shapes). The wire name is the
last segment of the path and the name the error-code table and ``error.operation`` use.

>>> OPERATION_TABLE["refund"].path, OPERATION_TABLE["refund"].mtls
('/secapi/pay/refund', True)
>>> sorted(op.wire for op in OPERATION_TABLE.values() if not op.idempotent)
['closeorder', 'refund', 'unifiedorder']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, TypeAlias

__all__ = ["OPERATIONS", "OPERATION_TABLE", "Operation", "OperationName", "is_mutating"]

OperationName: TypeAlias = Literal[
    "unifiedorder",
    "orderquery",
    "closeorder",
    "refund",
    "refundquery",
    "downloadbill",
    "queryexchagerate",
    "report",
    "jscode2session",
]


@dataclass(frozen=True, slots=True)
class Operation:
    """One WeChat API: its wire name, path and how it is sent and answered."""

    #: The last path segment: the error-code table's operation name, also ``error.operation``.
    wire: OperationName
    path: str
    #: The dotted name the SDK's events and logs use (``orders.create``).
    name: str
    #: Reads may be re-sent after an unknown outcome; writes change state at WeChat, where a
    #: business FAIL may hide a success (spec 2.3), so their unknown errors leave the outcome unknown.
    idempotent: bool
    #: ``/secapi/...``: mutual TLS with the institution's client certificate (spec 2.2).
    mtls: bool = False
    #: The *success* answer carries no signature (spec 13.2, 15): a bill is a CSV file, the report
    #: API answers plain XML, login answers JSON. Failures are checked as usual.
    unsigned_success: bool = False
    #: The success answer has ``result_code`` and ``nonce_str`` (spec 14: the rate query has
    #: neither; a bill download's success is not XML at all). Without this layer every failure is
    #: ``return_code=FAIL``.
    result_layer: bool = True


_ROWS: Final = (
    Operation("unifiedorder", "/pay/unifiedorder", "orders.create", idempotent=False),
    Operation("orderquery", "/pay/orderquery", "orders.query", idempotent=True),
    Operation("closeorder", "/pay/closeorder", "orders.close", idempotent=False),
    Operation("refund", "/secapi/pay/refund", "refunds.create", idempotent=False, mtls=True),
    Operation("refundquery", "/pay/refundquery", "refunds.query", idempotent=True),
    Operation(
        "downloadbill",
        "/pay/downloadbill",
        "bills.download",
        idempotent=True,
        unsigned_success=True,
        result_layer=False,
    ),
    Operation("queryexchagerate", "/pay/queryexchagerate", "rates.query", idempotent=True, result_layer=False),
    Operation("report", "/payitil/report", "report", idempotent=True, unsigned_success=True),
    Operation("jscode2session", "/sns/jscode2session", "code_to_session", idempotent=True, unsigned_success=True),
)  # fmt: skip

#: Wire name -> :class:`Operation`, every API the SDK or the sandbox knows.
OPERATION_TABLE: Final[Mapping[str, Operation]] = MappingProxyType({op.wire: op for op in _ROWS})

#: The signed-XML operations of the error-code table (every row but Mini Program login).
OPERATIONS: Final[frozenset[str]] = frozenset(op.wire for op in _ROWS if op.wire != "jscode2session")


def is_mutating(operation: str) -> bool:
    """Whether ``operation`` (a wire name) changes state at WeChat; unknown names are not."""
    op = OPERATION_TABLE.get(operation)
    return op is not None and not op.idempotent
