"""The WeChat side: route table, the request pipeline of spec 18.4, faults, the journal.

Pipeline, every XML endpoint: POST only, non-empty body, UTF-8, a flat ``<xml>`` -> known
``mch_id`` and bound ``appid`` -> signature over **all** received fields (``sign_type`` absent
means MD5) -> required fields (``LACK_PARAMS``) -> sub-merchant bindings (``sub_mch_id`` under
``mch_id``: ``NOAUTH``; ``sub_appid`` of that ``sub_mch_id``: ``APPID_MCHID_NOT_MATCH``) -> the
backend's field rules (spec 16.5), then its business rules. Answers are HTTP 200 + XML, signed
with the request's algorithm; ``return_code=FAIL`` answers carry no ``sign``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import httpx2
from cryptography import x509
from cryptography.x509.oid import NameOID
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from minipay.protocol import (
    OPERATION_TABLE,
    OPERATIONS,
    Operation,
    SignatureError,
    XMLError,
    decode_xml,
    encode_xml,
    sign,
    verify,
)
from minipay.sandbox._backend import BILL_FAULTS, LOGIN_FAULTS, XML_FAULTS, Backend
from minipay.sandbox._config import Institution, SubMerchant
from minipay.sandbox._errors import BizFail, ReturnFail
from minipay.sandbox._models import Fault

__all__ = ["FAULT_HEADER", "wechat_routes"]

FAULT_HEADER = "x-sandbox-fault"
#: Characters of a request's and a reply's body kept in the journal (``xml``, ``reply``).
WIRE_CAP = 16_384

_REQUIRED: dict[str, tuple[str, ...]] = {
    "unifiedorder": (
        "appid", "mch_id", "sub_mch_id", "nonce_str", "sign", "body", "out_trade_no", "total_fee",
        "spbill_create_ip", "notify_url", "trade_type", "fee_type",
    ),
    "orderquery": ("appid", "mch_id", "sub_mch_id", "nonce_str", "sign"),
    "closeorder": ("appid", "mch_id", "sub_mch_id", "out_trade_no", "nonce_str", "sign"),
    "refund": ("appid", "mch_id", "sub_mch_id", "nonce_str", "sign", "out_refund_no", "total_fee", "refund_fee"),
    "refundquery": ("appid", "mch_id", "sub_mch_id", "nonce_str", "sign"),
    "downloadbill": ("appid", "mch_id", "nonce_str", "sign", "bill_date"),
    "queryexchagerate": ("appid", "mch_id", "fee_type", "date", "sign"),
    "report": ("appid", "mch_id", "nonce_str", "sign", "interface_url"),
}  # fmt: skip


class DropConnection(Response):
    """Close the connection without an answer (fault ``drop`` / ``lost_response``).

    On ``minipay sandbox`` (our uvicorn protocol) the TCP connection is aborted. In-process
    (an ASGI transport) there is no connection: raise what an HTTP client raises when the server
    disconnects.
    """

    def __init__(self) -> None:
        super().__init__(b"", status_code=599)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        abort = scope.get("extensions", {}).get("minipay.abort")
        if abort is not None:
            abort()
            return
        raise httpx2.RemoteProtocolError("Server disconnected without sending a response.")


def _xml(fields: Mapping[str, str | int], status: int = 200) -> Response:
    return Response(encode_xml(fields), status_code=status, media_type="text/xml")


def parse_fault_header(value: str) -> Fault:
    """``X-Sandbox-Fault: SYSTEMERROR`` / ``http_500`` / ``delay=0.5`` / ``drop`` ..."""
    name, _, arg = value.strip().partition("=")
    delay = 0.0
    if name == "delay":
        try:
            delay = min(max(float(arg or "1"), 0.0), 60.0)
        except ValueError:
            delay = 1.0
    return Fault(id=0, endpoint="*", fault=name, times=1, delay=delay)


def _peer_cn(scope: Scope) -> tuple[bool, str | None]:
    tls = scope.get("extensions", {}).get("tls")
    chain = (tls or {}).get("client_cert_chain") or []
    if not chain:
        return False, None
    cert = x509.load_pem_x509_certificate(chain[0].encode("ascii"))
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return True, value if isinstance(value, str) else None


class Pipeline:
    """One XML endpoint: the checks of spec 18.4, then the backend."""

    def __init__(self, operation: Operation) -> None:
        self.operation = operation
        self.endpoint = operation.wire

    async def handle(self, request: Request) -> Response:
        backend: Backend = request.app.state.sandbox
        entry: dict[str, Any] = {
            "at": backend.now().isoformat(),
            "method": request.method,
            "path": request.url.path,
            "endpoint": self.endpoint,
            "fields": {},
            "status": 200,
            "return_code": None,
            "result_code": None,
            "err_code": None,
            "fault": None,
        }
        try:
            response = await self._handle(request, backend, entry)
        except ReturnFail as exc:
            response = _xml(exc.fields())
        entry["status"] = response.status_code
        if isinstance(response, DropConnection):
            entry["status"] = None
        else:
            entry["reply"] = bytes(response.body[:WIRE_CAP]).decode("utf-8", "replace")
        if response.media_type == "text/xml" and response.status_code == 200:
            try:
                answer = decode_xml(bytes(response.body))
            except XMLError:
                answer = {}
            entry["return_code"] = answer.get("return_code")
            entry["return_msg"] = answer.get("return_msg")
            entry["result_code"] = answer.get("result_code")
            entry["err_code"] = answer.get("err_code")
        backend.log_request(entry)
        return response

    async def _handle(self, request: Request, backend: Backend, entry: dict[str, Any]) -> Response:
        body = await request.body()
        fields: dict[str, str] = {}
        parse_error: str | None = None
        if request.method != "POST":
            parse_error = "REQUIRE_POST_METHOD: 请使用post方法"
        elif not body.strip():
            parse_error = "POST_DATA_EMPTY: post数据为空"
        else:
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                parse_error = "NOT_UTF8: 编码格式错误"
            else:
                try:
                    fields = decode_xml(body)
                except XMLError as exc:
                    parse_error = f"XML_FORMAT_ERROR: XML格式错误 ({exc})"
        entry["fields"] = dict(fields)
        # What came over the wire, as it came (the simulator's wire panel shows it; capped).
        entry["xml"] = body[:WIRE_CAP].decode("utf-8", "replace")
        if self.operation.mtls:
            # The CN of the client certificate the request came with (None: none, e.g. plain HTTP).
            entry["client_cert"] = _peer_cn(request.scope)[1]
        # A call naming the order by transaction_id (query, refund) is still "for" its out_trade_no:
        # faults scoped to an out_trade_no and the journal filter must see it.
        out_trade_no = fields.get("out_trade_no") or backend.out_trade_no_of(fields.get("transaction_id"))
        entry["out_trade_no"] = out_trade_no
        header = request.headers.get(FAULT_HEADER)
        if header:
            faults = [parse_fault_header(value) for value in header.split(",") if value.strip()]
        else:
            faults = backend.take_faults(self.endpoint, out_trade_no, fields.get("sub_mch_id"))
        for each in faults:
            if each.fault not in XML_FAULTS:
                raise ReturnFail(
                    f"unknown {FAULT_HEADER} value {each.fault!r} (one of {', '.join(sorted(XML_FAULTS))})"
                )
        if len(faults) > 1 and not all(each.fault in BILL_FAULTS for each in faults):
            raise ReturnFail(
                f"several {FAULT_HEADER} values combine only bill faults ({', '.join(sorted(BILL_FAULTS))})"
            )
        fault = faults[0] if faults else None
        kind = fault.fault if fault else None
        kinds = sorted({each.fault for each in faults})
        entry["fault"] = "+".join(kinds) if kinds else None
        if fault is not None and fault.fault == "delay":
            await asyncio.sleep(fault.delay)
        if kind == "http_500":
            return Response("Internal Server Error", status_code=500, media_type="text/plain")
        if kind == "drop":
            return DropConnection()
        if parse_error is not None:
            raise ReturnFail(parse_error)
        inst = self._authenticate(request, backend, fields)
        sign_type = fields.get("sign_type") or "MD5"
        missing = [name for name in _REQUIRED[self.endpoint] if not fields.get(name)]
        if backend.config.effective.return_layer_param_errors:
            # As the documentation shows them: return_code=FAIL, a Chinese return_msg, no signature.
            if missing:
                raise ReturnFail(f"缺少参数{missing[0]}")
            too_long = backend.too_long(fields)
            if too_long is not None:
                raise ReturnFail(f"{too_long}参数长度有误")
        if missing:
            return self._answer(backend, inst, fields, sign_type, BizFail("LACK_PARAMS", f"缺少参数{missing[0]}"), kind)
        if len(fields.get("nonce_str", "")) > 32:
            failure = BizFail("PARAM_ERROR", "nonce_str参数错误: at most 32 characters")
            return self._answer(backend, inst, fields, sign_type, failure, kind)
        sub: SubMerchant | None = None
        if fields.get("sub_mch_id"):
            sub = backend.world.sub_merchant(inst, fields["sub_mch_id"])
            if sub is None:
                failure = BizFail("NOAUTH", "sub_mch_id与mch_id不存在受理关系")
                return self._answer(backend, inst, fields, sign_type, failure, kind)
            try:
                backend.check_sub_appid(sub, fields)
            except BizFail as exc:
                return self._answer(backend, inst, fields, sign_type, exc, kind)
        if kind == "SYSTEMERROR":
            return self._answer(backend, inst, fields, sign_type, BizFail("SYSTEMERROR"), kind)
        if self.endpoint == "downloadbill":
            bill = backend.download_bill(inst, fields, kinds)
            if kind == "lost_response":
                return DropConnection()
            return Response(bill, media_type="text/plain")
        try:
            result: dict[str, str | int] | BizFail = self._dispatch(backend, inst, sub, fields)
        except BizFail as exc:
            result = exc
        return self._answer(backend, inst, fields, sign_type, result, kind)

    def _authenticate(self, request: Request, backend: Backend, fields: Mapping[str, str]) -> Institution:
        # /secapi: the certificate comes first (WeChat checks it at its gateway, before it reads
        # the request): no certificate, or another merchant's, fails whatever the body says.
        secapi = self.operation.mtls and backend.config.effective.require_client_cert
        present, cn = _peer_cn(request.scope) if secapi else (False, None)
        if secapi and not present:
            raise ReturnFail("证书错误: /secapi requires the institution's client certificate (mutual TLS)")
        if not fields.get("mch_id"):
            raise ReturnFail("mch_id参数格式错误 (mch_id missing)")
        inst = backend.world.institution(fields["mch_id"])
        if inst is None:
            raise ReturnFail("mch_id参数错误 (MCHID_NOT_EXIST)")
        if not fields.get("appid"):
            raise ReturnFail("appid参数格式错误 (appid missing)")
        if fields["appid"] != inst.appid:
            raise ReturnFail("appid和mch_id不匹配 (APPID_MCHID_NOT_MATCH)")
        if secapi and cn != inst.mch_id:
            raise ReturnFail("证书错误: the client certificate does not belong to this mch_id")
        sign_type = fields.get("sign_type") or "MD5"
        if sign_type not in ("MD5", "HMAC-SHA256"):
            raise ReturnFail("sign_type参数错误 (MD5 or HMAC-SHA256)")
        try:
            verify(fields, inst.key, sign_type)
        except SignatureError:
            raise ReturnFail("签名错误") from None
        return inst

    def _dispatch(
        self, backend: Backend, inst: Institution, sub: SubMerchant | None, f: Mapping[str, str]
    ) -> dict[str, str | int]:
        match self.endpoint:
            case "unifiedorder":
                assert sub is not None
                return backend.unified_order(inst, sub, f)
            case "orderquery":
                assert sub is not None
                return backend.order_query(sub, f)
            case "closeorder":
                assert sub is not None
                return backend.close_order(sub, f)
            case "refund":
                assert sub is not None
                if not f.get("transaction_id") and not f.get("out_trade_no"):
                    raise BizFail("LACK_PARAMS", "transaction_id或out_trade_no必传")
                return backend.refund(inst, sub, f)
            case "refundquery":
                assert sub is not None
                return backend.refund_query(sub, f)
            case "queryexchagerate":
                return backend.exchange_rate(inst, f)
            case "report":
                return {}
        raise AssertionError(self.endpoint)  # pragma: no cover

    def _answer(
        self,
        backend: Backend,
        inst: Institution,
        request: Mapping[str, str],
        sign_type: str,
        result: dict[str, str | int] | BizFail,
        fault: str | None,
    ) -> Response:
        if not self.operation.result_layer and isinstance(result, BizFail):
            # downloadbill / queryexchagerate fail at the return_code layer (spec 13.2, 14).
            raise ReturnFail(f"{result.err_code}: {result.describe(self.endpoint)}")
        if self.operation.unsigned_success and not isinstance(result, BizFail):
            # The report API answers without a signature (spec 15).
            return _xml({"return_code": "SUCCESS", "return_msg": "OK", "result_code": "SUCCESS"})
        fields: dict[str, str | int] = {"return_code": "SUCCESS", "return_msg": "OK", "appid": inst.appid,
                                         "mch_id": inst.mch_id}  # fmt: skip
        for name in ("sub_appid", "sub_mch_id"):
            if request.get(name):
                fields[name] = request[name]
        if self.operation.result_layer:
            fields["nonce_str"] = backend.ids.nonce()
        if isinstance(result, BizFail):
            fields.update(result_code="FAIL", err_code=result.err_code, err_code_des=result.describe(self.endpoint))
        else:
            if self.operation.result_layer:
                fields["result_code"] = "SUCCESS"
            fields.update(result)
        fields["sign"] = sign(fields, inst.key, sign_type)
        if fault == "bad_signature":
            fields["sign"] = ("0" if fields["sign"] != "0" * len(str(fields["sign"])) else "1") * len(
                str(fields["sign"])
            )
        if fault == "lost_response":
            return DropConnection()
        return _xml(fields)


async def jscode2session(request: Request) -> Response:
    """``GET /sns/jscode2session`` (spec 4): JSON, HTTP 200 for success and errors."""
    backend: Backend = request.app.state.sandbox
    params = dict(request.query_params)
    entry: dict[str, Any] = {
        "at": backend.now().isoformat(),
        "method": request.method,
        "path": request.url.path,
        "endpoint": "jscode2session",
        "fields": {k: ("<redacted>" if k == "secret" else v) for k, v in params.items()},
        "status": 200,
        "fault": None,
    }
    header = request.headers.get(FAULT_HEADER)
    fault = parse_fault_header(header) if header else backend.take_fault("jscode2session", None)
    kind = fault.fault if fault else None
    if kind is not None and kind not in LOGIN_FAULTS:
        kind = "unknown"
    entry["fault"] = kind
    response: Response
    if fault is not None and kind == "delay":
        await asyncio.sleep(fault.delay)
    if kind == "http_500":
        response = Response("Internal Server Error", status_code=500, media_type="text/plain")
    elif kind in ("drop", "lost_response"):
        response = DropConnection()
    elif kind == "-1":
        response = JSONResponse({"errcode": -1, "errmsg": "system error"})
    elif kind == "45011":
        response = JSONResponse({"errcode": 45011, "errmsg": "api minute-quota reach limit"})
    elif kind == "40226":
        response = JSONResponse({"errcode": 40226, "errmsg": "invalid (high risk) user"})
    elif kind == "unknown":
        response = JSONResponse(
            {"errcode": -1, "errmsg": f"unknown {FAULT_HEADER} value (one of {', '.join(sorted(LOGIN_FAULTS))})"},
            status_code=400,
        )
    elif request.method != "GET":
        response = JSONResponse({"errcode": 43001, "errmsg": "require GET method"})
    else:
        response = JSONResponse(backend.code2session(params))
    entry["status"] = response.status_code
    # For the wire panel: the request line and the answer, app secret and session_key redacted.
    entry["xml"] = f"{request.method} {request.url.path}?{urlencode(entry['fields'], safe='<>')}"
    if not isinstance(response, DropConnection):
        entry["reply"] = _redacted_session(bytes(response.body[:WIRE_CAP]))
    backend.log_request(entry)
    return response


def _redacted_session(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    try:
        answer = json.loads(text)
    except ValueError:
        return text
    if isinstance(answer, dict) and "session_key" in answer:
        answer["session_key"] = "<redacted>"
        return json.dumps(answer, ensure_ascii=False)
    return text


def wechat_routes() -> list[Route]:
    """The WeChat paths (any Host header)."""
    methods = ["GET", "POST", "PUT", "DELETE"]
    routes = [
        Route(op.path, Pipeline(op).handle, methods=methods) for op in OPERATION_TABLE.values() if op.wire in OPERATIONS
    ]
    routes.append(Route(OPERATION_TABLE["jscode2session"].path, jscode2session, methods=["GET", "POST"]))
    return routes
