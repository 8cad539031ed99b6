"""The Minipay SDK: typed sync and async clients for WeChat Pay Global v2 (institution mode).

``Client`` and ``AsyncClient`` share one pure base (request building, signing, response checking);
they only differ in how they send. See ``docs/client.md`` for the complete Mini Program flow.

Exceptions (all from :mod:`minipay.protocol`, re-exported here)::

    MinipayError
    ├── ConfigurationError, FieldError          wrong settings / a field breaks a WeChat rule
    ├── SignatureError                          an answer or notification whose signature fails
    │   └── ResponseSignatureError              ...an answer: with operation, ids, outcome_unknown (writes)
    ├── XMLError, DecryptionError               a body or req_info refused
    ├── LoginError                              jscode2session errcode (retryable: -1, 45011)
    ├── TransportError
    │   ├── ConnectError                        never reached WeChat (retried, fails over)
    │   └── ReadTimeoutError                    sent, no answer: outcome_unknown -> query
    └── WeChatError
        ├── CommunicationError                  return_code=FAIL
        ├── UnexpectedResponseError             not the protocol (HTTP 5xx, not XML...)
        └── BusinessError                       result_code=FAIL, one class per err_code
"""

from __future__ import annotations

from minipay.client._async import AsyncClient
from minipay.client._certs import ClientCertificate
from minipay.client._events import ClientEvent
from minipay.client._handler import NotificationHandler, NotificationReply
from minipay.client._models import (
    Bill,
    BillRow,
    BillSummary,
    CloseOrderResponse,
    Code2SessionResult,
    ExchangeRate,
    OrderQueryResponse,
    RefundQueryResponse,
    RefundRecord,
    RefundResponse,
    UnifiedOrderResponse,
)
from minipay.client._operations import REGIONS, Region
from minipay.client._retry import Backoff, RetryDecision, decide
from minipay.client._sync import Client
from minipay.protocol import (
    BusinessError,
    CommunicationError,
    ConfigurationError,
    ConnectError,
    DecryptionError,
    FieldError,
    LoginError,
    MinipayError,
    NotEnoughError,
    OrderClosedError,
    OrderNotFoundError,
    OrderPaidError,
    OutTradeNoUsedError,
    PaymentNotification,
    PayParams,
    ReadTimeoutError,
    RefundNotFoundError,
    RefundNotification,
    ResponseSignatureError,
    SignatureError,
    TransportError,
    UnexpectedResponseError,
    WeChatError,
    WeChatSystemError,
    XMLError,
)

__all__ = [
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
]
