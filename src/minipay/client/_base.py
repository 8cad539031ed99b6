"""The pure half of the SDK: builds signed requests and judges answers; no I/O at all.

:class:`BaseClient` holds the institution's configuration (immutable after construction, so one
client is safe across threads and tasks) and knows, for every operation, how to turn keyword
arguments into checked wire fields, how to encode one attempt (fresh ``nonce_str`` and ``sign``
each time), and how to judge the answer: ``return_code``, then the **signature**, then
``result_code`` (spec 2.3) -- a response whose signature does not verify is a
:class:`~minipay.protocol.SignatureError`, never a business error. The sync and async shells only send.
"""

from __future__ import annotations

import json
import logging
import random as _random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final, Literal, TypeAlias, TypeVar
from urllib.parse import urlsplit

import httpx2

from minipay.client._certs import ClientCertificate, VerifyTypes
from minipay.client._events import LOGGER_NAME, EventHook
from minipay.client._models import Code2SessionResult, parse_model
from minipay.client._operations import (
    BILL_DOWNLOAD,
    CLOSE_ORDER,
    LOGIN,
    ORDER_QUERY,
    RATE_QUERY,
    REFUND,
    REFUND_QUERY,
    UNIFIED_ORDER,
    Operation,
    Region,
    check_login_base_url,
    resolve_hosts,
)
from minipay.client._retry import Backoff
from minipay.protocol import (
    HMAC_SHA256,
    MD5,
    ApiKey,
    CloseOrderRequest,
    ConfigurationError,
    DownloadBillRequest,
    ExchangeRateRequest,
    FieldError,
    OrderQueryRequest,
    PaymentNotification,
    PayParams,
    RefundNotification,
    RefundQueryRequest,
    RefundRequest,
    Secret,
    SignPolicy,
    SignType,
    UnexpectedResponseError,
    UnifiedOrderRequest,
    WeChatRequest,
    WeChatResponse,
    XMLError,
    build_pay_params,
    build_request,
    check_id,
    check_notify_url,
    check_response,
    decode_xml,
    encode_xml,
)
from minipay.protocol import (
    parse_payment_notification as _parse_payment_notification,
)
from minipay.protocol import (
    parse_refund_notification as _parse_refund_notification,
)

__all__ = ["BaseClient", "Prepared"]

_MAX_RESPONSE_BYTES: Final = 256 * 1024
BillType: TypeAlias = Literal["ALL", "SUCCESS", "REFUND", "RECHARGE_REFUND"]
_M = TypeVar("_M", bound=WeChatResponse)


def _given(**fields: Any) -> dict[str, Any]:
    """The arguments actually given: ``None`` means "absent" (the protocol models validate what they get)."""
    return {name: value for name, value in fields.items() if value is not None}


def _is_wechat(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "weixin.qq.com" or host.endswith(".weixin.qq.com")


@dataclass(frozen=True, slots=True)
class Prepared:
    """One operation ready to send: the business fields (identical on every attempt) and the ids."""

    operation: Operation
    request: WeChatRequest
    ids: Mapping[str, str]


class BaseClient:
    """Configuration + request building + response checking, shared by ``Client`` and ``AsyncClient``."""

    def __init__(
        self,
        *,
        appid: str,
        mch_id: str,
        api_key: str | ApiKey,
        sign_type: SignType = MD5,
        sub_mch_id: str | None = None,
        sub_appid: str | None = None,
        region: Region = "HK",
        base_url: str | None = None,
        failover: Sequence[str] = (),
        login_base_url: str = "https://api.weixin.qq.com",
        cert: ClientCertificate | None = None,
        verify: VerifyTypes = True,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        max_retries: int = 2,
        backoff: Backoff | None = None,
        clock: Callable[[], float] | None = None,
        random: Callable[[], float] | None = None,
        on_event: EventHook | None = None,
        logger: logging.Logger | None = None,
        allow_local_notify_url: bool = False,
    ) -> None:
        self.appid = check_id(appid, "appid")
        self.mch_id = check_id(mch_id, "mch_id")
        self._key = api_key if isinstance(api_key, ApiKey) else ApiKey(api_key)
        if sign_type not in (MD5, HMAC_SHA256):
            raise ConfigurationError(f"sign_type must be 'MD5' or 'HMAC-SHA256', not {sign_type!r}")
        self.sign_type: SignType = sign_type
        # Choosing HMAC-SHA256 pins it: an MD5-signed answer or notification is refused (no downgrade).
        self._policy = SignPolicy(pinned=HMAC_SHA256 if sign_type == HMAC_SHA256 else None)
        self.sub_mch_id = None if sub_mch_id is None else check_id(sub_mch_id, "sub_mch_id")
        self.sub_appid = None if sub_appid is None else check_id(sub_appid, "sub_appid")
        self.hosts = resolve_hosts(region, base_url, failover)
        self._urls: dict[str, httpx2.URL] = {}
        self.login_base_url = check_login_base_url(login_base_url)
        if cert is not None:
            cert.material(mch_id=self.mch_id)  # a wrong .p12 password fails here, not at the first refund
        self.cert = cert
        if verify is False and any(_is_wechat(url) for url in (*self.hosts, self.login_base_url)):
            # The API key never travels, but the payer's data, the app secret (login) and the
            # refund's client-certificate handshake do: WeChat's hosts are always verified.
            raise ConfigurationError("verify=False is refused for WeChat's hosts (*.weixin.qq.com)")
        self.verify = verify
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ConfigurationError("timeouts must be positive seconds")
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError("max_retries must be an int >= 0")
        self.max_retries = max_retries
        self.backoff = backoff if backoff is not None else Backoff()
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self.random: Callable[[], float] = random if random is not None else _random.random
        self.on_event = on_event
        self.logger = logger if logger is not None else logging.getLogger(LOGGER_NAME)
        self.allow_local_notify_url = allow_local_notify_url

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(appid={self.appid!r}, mch_id={self.mch_id!r}, sign_type={self.sign_type!r}, "
            f"hosts={list(self.hosts)!r}, api_key=**********)"
        )

    # --- shared pieces --------------------------------------------------------------------------

    def _sub_mch_id(self, value: str | None) -> str:
        chosen = value if value is not None else self.sub_mch_id
        if chosen is None:
            raise ConfigurationError("sub_mch_id is required in institution mode: pass it or set a client default")
        return check_id(chosen, "sub_mch_id")

    def _sub_appid(self, value: str | None, sub_mch_id: str | None = None) -> str | None:
        # The default sub_appid belongs to the default sub-merchant: a call naming another
        # sub_mch_id must name its Mini Program too (else APPID_MCHID_NOT_MATCH at WeChat).
        if value is not None:
            return check_id(value, "sub_appid")
        if sub_mch_id is not None and sub_mch_id != self.sub_mch_id:
            return None
        return self.sub_appid

    def _prepare(self, operation: Operation, request: WeChatRequest) -> Prepared:
        fields = request.to_fields()
        names = ("sub_mch_id", "out_trade_no", "transaction_id", "out_refund_no", "refund_id")
        ids = {"mch_id": self.mch_id} | {name: fields[name] for name in names if fields.get(name)}
        return Prepared(operation, request, ids)

    def url(self, host: str, operation: Operation) -> httpx2.URL:
        """The URL of ``operation`` at ``host``, parsed once (a string is parsed again by httpx2 on
        every request: about half of building one)."""
        text = host + operation.path
        url = self._urls.get(text)
        if url is None:
            url = self._urls[text] = httpx2.URL(text)
        return url

    def encode(self, prepared: Prepared, *, nonce: str | None = None) -> bytes:
        """One attempt's body: the same business fields, a fresh ``nonce_str`` and a fresh ``sign``."""
        fields = build_request(
            prepared.request, appid=self.appid, mch_id=self.mch_id, key=self._key, sign_type=self.sign_type, nonce=nonce
        )
        return encode_xml(fields)

    def require_cert(self, mtls_ready: bool) -> None:
        """Refuse to send a ``/secapi`` call to WeChat without the API certificate (it would fail in TLS)."""
        if not mtls_ready and any(_is_wechat(host) for host in self.hosts):
            raise ConfigurationError(
                "refunds.create needs the institution's API certificate: pass cert=ClientCertificate.from_p12(...)"
            )

    def check(self, prepared: Prepared, status_code: int, content: bytes) -> dict[str, str]:
        """Judge an XML answer: HTTP status, XML, ``return_code``, signature, then ``result_code``."""
        operation = prepared.operation
        if operation.unsigned_success:
            raise TypeError(f"{operation.name} answers unsigned on success: use check_bill")
        if status_code != 200:
            raise UnexpectedResponseError(
                f"HTTP {status_code} instead of 200",
                operation=operation.wire,
                ids=prepared.ids,
                outcome_unknown=not operation.idempotent,
            )
        try:
            fields = decode_xml(content, max_bytes=_MAX_RESPONSE_BYTES)
        except XMLError as exc:
            raise UnexpectedResponseError(
                f"the answer is not v2 XML ({exc})",
                operation=operation.wire,
                ids=prepared.ids,
                outcome_unknown=not operation.idempotent,
            ) from None
        return self._check_fields(prepared, fields)

    def _check_fields(self, prepared: Prepared, fields: Mapping[str, str]) -> dict[str, str]:
        """``check_response``, then the identifiers the verified answer echoes must be the call's own."""
        operation = prepared.operation
        checked = check_response(
            operation.wire, fields, key=self._key, sign_type=self.sign_type, policy=self._policy, ids=prepared.ids
        )
        # A verified answer proves it came from a holder of the key, not that it answers *this* call
        # (v2 echoes no request nonce): the identifiers it echoes must be ours.
        expected = {"appid": self.appid, **prepared.ids}
        for name, value in expected.items():
            echoed = checked.get(name)
            if echoed and echoed != value:
                raise UnexpectedResponseError(
                    f"the answer is for another {name}",
                    operation=operation.wire,
                    ids=prepared.ids,
                    outcome_unknown=not operation.idempotent,
                )
        return checked

    # --- request builders (the keyword arguments are the public signatures) ---------------------
    # Field rules live in the protocol's request models; the SDK adds the institution defaults and
    # WeChat's public-reachability rule for ``notify_url`` (loopback only with allow_local_notify_url).

    def _notify_url(self, value: str | None, field: str = "notify_url") -> str | None:
        return None if value is None else check_notify_url(value, field, allow_local=self.allow_local_notify_url)

    def build_unified_order(
        self,
        *,
        out_trade_no: str,
        total_fee: int,
        fee_type: str,
        body: str,
        notify_url: str,
        spbill_create_ip: str,
        sub_openid: str | None = None,
        openid: str | None = None,
        sub_mch_id: str | None = None,
        sub_appid: str | None = None,
        attach: str | None = None,
        detail: str | None = None,
        time_start: datetime | None = None,
        time_expire: datetime | None = None,
        goods_tag: str | None = None,
        device_info: str | None = None,
        limit_pay: str | None = None,
    ) -> Prepared:
        request = UnifiedOrderRequest(
            **_given(
                sub_mch_id=self._sub_mch_id(sub_mch_id),
                sub_appid=self._sub_appid(sub_appid, sub_mch_id),
                body=body,
                out_trade_no=out_trade_no,
                total_fee=total_fee,
                fee_type=fee_type,
                spbill_create_ip=spbill_create_ip,
                notify_url=self._notify_url(notify_url),
                trade_type="JSAPI",
                sub_openid=sub_openid,
                openid=openid,
                attach=attach,
                detail=detail,
                time_start=time_start,
                time_expire=time_expire,
                goods_tag=goods_tag,
                device_info=device_info,
                limit_pay=limit_pay,
            )
        )
        return self._prepare(UNIFIED_ORDER, request)

    def build_order_query(
        self,
        *,
        out_trade_no: str | None = None,
        transaction_id: str | None = None,
        sub_mch_id: str | None = None,
        sub_appid: str | None = None,
    ) -> Prepared:
        request = OrderQueryRequest(
            **_given(
                sub_mch_id=self._sub_mch_id(sub_mch_id),
                sub_appid=self._sub_appid(sub_appid, sub_mch_id),
                out_trade_no=out_trade_no,
                transaction_id=transaction_id,
            )
        )
        return self._prepare(ORDER_QUERY, request)

    def build_close_order(
        self, *, out_trade_no: str, sub_mch_id: str | None = None, sub_appid: str | None = None
    ) -> Prepared:
        request = CloseOrderRequest(
            **_given(
                sub_mch_id=self._sub_mch_id(sub_mch_id),
                sub_appid=self._sub_appid(sub_appid, sub_mch_id),
                out_trade_no=out_trade_no,
            )
        )
        return self._prepare(CLOSE_ORDER, request)

    def build_refund(
        self,
        *,
        out_refund_no: str,
        total_fee: int,
        refund_fee: int,
        refund_fee_type: str,
        out_trade_no: str | None = None,
        transaction_id: str | None = None,
        notify_url: str | None = None,
        refund_desc: str | None = None,
        sub_mch_id: str | None = None,
        sub_appid: str | None = None,
    ) -> Prepared:
        if out_trade_no is not None and transaction_id is not None:
            raise FieldError("out_trade_no", "pass one of out_trade_no and transaction_id, not both")
        request = RefundRequest(
            **_given(
                sub_mch_id=self._sub_mch_id(sub_mch_id),
                sub_appid=self._sub_appid(sub_appid, sub_mch_id),
                out_trade_no=out_trade_no,
                transaction_id=transaction_id,
                out_refund_no=out_refund_no,
                total_fee=total_fee,
                refund_fee=refund_fee,
                refund_fee_type=refund_fee_type,
                refund_desc=refund_desc,
                notify_url=self._notify_url(notify_url),
            )
        )
        return self._prepare(REFUND, request)

    def build_refund_query(
        self,
        *,
        out_refund_no: str | None = None,
        refund_id: str | None = None,
        out_trade_no: str | None = None,
        transaction_id: str | None = None,
        offset: int | None = None,
        sub_mch_id: str | None = None,
        sub_appid: str | None = None,
    ) -> Prepared:
        given = [v for v in (out_refund_no, refund_id, out_trade_no, transaction_id) if v is not None]
        if len(given) != 1:
            raise FieldError(
                "out_refund_no", "pass exactly one of out_refund_no, refund_id, out_trade_no and transaction_id"
            )
        request = RefundQueryRequest(
            **_given(
                sub_mch_id=self._sub_mch_id(sub_mch_id),
                sub_appid=self._sub_appid(sub_appid, sub_mch_id),
                out_refund_no=out_refund_no,
                refund_id=refund_id,
                out_trade_no=out_trade_no,
                transaction_id=transaction_id,
                offset=offset,
            )
        )
        return self._prepare(REFUND_QUERY, request)

    def build_bill(
        self, *, bill_date: date, sub_mch_id: str | None = None, bill_type: BillType = "ALL", gzip: bool = False
    ) -> Prepared:
        request = DownloadBillRequest(
            **_given(
                sub_mch_id=sub_mch_id if sub_mch_id is not None else self.sub_mch_id,
                bill_date=bill_date,
                bill_type=bill_type,
                tar_type="GZIP" if gzip else None,
            )
        )
        return self._prepare(BILL_DOWNLOAD, request)

    def build_rate_query(self, *, fee_type: str, date: date, sub_mch_id: str | None = None) -> Prepared:
        request = ExchangeRateRequest(
            **_given(sub_mch_id=sub_mch_id if sub_mch_id is not None else self.sub_mch_id, fee_type=fee_type, date=date)
        )
        return self._prepare(RATE_QUERY, request)

    def check_bill(self, prepared: Prepared, status_code: int, content: bytes) -> bytes:
        """Judge a bill download: success is the CSV file (gzip with ``tar_type=GZIP``), not signed XML (spec 13.2).

        "No Bill Exist" is an empty bill (``b""``); any other XML answer is checked like every response
        (``return_code=FAIL`` -> :class:`CommunicationError`, e.g. "Bill Creating").
        """
        operation = prepared.operation
        if not operation.unsigned_success:
            raise TypeError(f"{operation.name} answers signed XML: use check")
        if status_code != 200:
            raise UnexpectedResponseError(
                f"HTTP {status_code} instead of 200", operation=operation.wire, ids=prepared.ids
            )
        head = content[:64].lstrip()
        if head.startswith(b"<xml") or head.startswith(b"<?xml"):
            try:
                fields = decode_xml(content, max_bytes=_MAX_RESPONSE_BYTES)
            except XMLError as exc:
                raise UnexpectedResponseError(
                    f"the answer is not v2 XML ({exc})", operation=operation.wire, ids=prepared.ids
                ) from None
            if fields.get("return_code") == "FAIL" and "no bill exist" in fields.get("return_msg", "").lower():
                return b""
            self._check_fields(prepared, fields)
            raise UnexpectedResponseError(
                "a bill download answered XML without a bill", operation=operation.wire, ids=prepared.ids
            )
        return content

    # --- answers --------------------------------------------------------------------------------

    @staticmethod
    def parse(prepared: Prepared, model: type[_M], fields: Mapping[str, str]) -> _M:
        """The typed answer; a malformed or missing field is an :class:`UnexpectedResponseError` with the ids."""
        return parse_model(model, prepared.operation.wire, fields, prepared.ids)

    # --- Mini Program login (spec 4) --------------------------------------------------------------

    def login_url(self) -> str:
        return self.login_base_url + LOGIN.path

    @staticmethod
    def login_params(appid: str, secret: str | Secret, js_code: str) -> dict[str, str]:
        check_id(appid, "appid")
        if not js_code or not isinstance(js_code, str):
            raise FieldError("js_code", "required: the code from wx.login()")
        revealed = secret.reveal() if isinstance(secret, Secret) else secret
        if not revealed:
            raise ConfigurationError("the Mini Program's app secret is required")
        return {"appid": appid, "secret": revealed, "js_code": js_code, "grant_type": "authorization_code"}

    @staticmethod
    def check_login(status_code: int, content: bytes) -> Code2SessionResult:
        """Judge a ``jscode2session`` answer: JSON; ``errcode`` absent or 0 means success."""
        if status_code != 200:
            raise UnexpectedResponseError(f"jscode2session answered HTTP {status_code}", operation=LOGIN.wire)
        try:
            data = json.loads(content)
        except (ValueError, UnicodeDecodeError):
            raise UnexpectedResponseError(
                "jscode2session answered something that is not JSON", operation=LOGIN.wire
            ) from None
        if not isinstance(data, dict):
            raise UnexpectedResponseError(
                "jscode2session answered a JSON value that is not an object", operation=LOGIN.wire
            )
        try:
            return Code2SessionResult.from_json(data)
        except FieldError as exc:
            raise UnexpectedResponseError(
                f"jscode2session answer is malformed: {exc.field}", operation=LOGIN.wire
            ) from None

    # --- pure helpers for the Mini Program and the notify_url ------------------------------------

    def pay_params(self, prepay_id: str, sub_appid: str | None = None, sign_type: SignType | None = None) -> PayParams:
        """The object for ``wx.requestPayment`` (spec 6): ``timeStamp``, ``nonceStr``, ``package``,
        ``signType``, ``paySign``. ``appId`` (the Mini Program = ``sub_appid``) is signed, not returned.

        ``sign_type`` defaults to the client's; it must match the one used at unified order.
        """
        app_id = self._sub_appid(sub_appid)
        if app_id is None:
            raise ConfigurationError("pay_params needs sub_appid (the Mini Program's AppID): pass it or set a default")
        chosen = self.sign_type if sign_type is None else sign_type
        if chosen not in (MD5, HMAC_SHA256):
            raise ConfigurationError(f"sign_type must be 'MD5' or 'HMAC-SHA256', not {chosen!r}")
        if not isinstance(prepay_id, str) or not prepay_id:
            raise FieldError("prepay_id", "required: UnifiedOrderResponse.prepay_id")
        return build_pay_params(app_id=app_id, prepay_id=prepay_id, key=self._key, sign_type=chosen)

    def parse_payment_notification(self, body: bytes) -> PaymentNotification:
        """Decode, verify (over all fields, with the client's policy) and type a payment notification.

        Raises :class:`XMLError`, :class:`SignatureError` (missing/wrong ``sign``; MD5 when the client
        pins HMAC-SHA256), :class:`FieldError` (malformed amount/time, or addressed to another merchant).
        """
        event = _parse_payment_notification(body, self._key, policy=self._policy)
        self._addressed_to_us(event.appid, event.mch_id)
        return event

    def parse_refund_notification(self, body: bytes) -> RefundNotification:
        """Decode a refund notification and decrypt its ``req_info`` with the API key (spec 12).

        Raises :class:`XMLError`, :class:`DecryptionError` (a forgery or another key), :class:`FieldError`.
        """
        event = _parse_refund_notification(body, self._key)
        self._addressed_to_us(event.appid, event.mch_id)
        return event

    def _addressed_to_us(self, appid: str | None, mch_id: str | None) -> None:
        if mch_id != self.mch_id:
            raise FieldError("mch_id", "the notification is addressed to another merchant")
        if appid is not None and appid != self.appid:
            raise FieldError("appid", "the notification is addressed to another institution AppID")
