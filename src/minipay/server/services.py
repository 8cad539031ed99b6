"""Use cases of the payment service: plain async functions over a unit of work and the ports.

Atomic phases (research B2): a payment or refund row is committed *before* WeChat is called; the
call's outcome is applied in a second transaction. An unknown outcome (timeout, SYSTEMERROR) leaves
the row as it is; it is resolved by querying WeChat, never by inventing a new ``out_trade_no`` or
``out_refund_no``.

Applying WeChat's answers lives in ``outcomes``, the errors in ``errors``, the JSON views in
``views``; their names are re-exported here for existing imports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from datetime import datetime, timedelta
from typing import Any

from minipay.protocol import (
    FieldError,
    LoginError,
    MinipayError,
    PayParams,
    TransportError,
    check_amount,
    check_text,
)
from minipay.server.commands import (
    CreatePayment,
    Principal,
    check_create_payment,
    err_code,
    is_unknown,
    new_out_refund_no,
    new_out_trade_no,
    new_payment,
    replayed_id,
)
from minipay.server.domain import (
    OPEN_STATUSES,
    DomainError,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    new_id,
)
from minipay.server.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    ServiceError,
    UpstreamError,
    UpstreamUnavailable,
)
from minipay.server.outcomes import (
    apply_payment_result,
    apply_refund_result,
    mark_payment_closed,
    record_refund_events,
)
from minipay.server.paging import Anchor, anchor_of, read_page
from minipay.server.ports import (
    Clock,
    OrderRequest,
    PaymentGateway,
    RefundRequest,
    UnitOfWorkPort,
    UnitOfWorkPortFactory,
)
from minipay.server.settings import Settings, SubMerchantSettings
from minipay.server.uow import retrying
from minipay.server.views import payment_view, refund_view

__all__ = [
    "PREPAY_LIFETIME",
    "Conflict",
    "CreatePayment",
    "InvalidRequest",
    "NotFound",
    "Principal",
    "ServiceError",
    "Services",
    "UpstreamError",
    "UpstreamUnavailable",
    "apply_payment_result",
    "apply_refund_result",
    "mark_payment_closed",
    "payment_view",
    "refund_view",
]

log = logging.getLogger("minipay.server")

PREPAY_LIFETIME = timedelta(hours=2)  # spec 16.4; we renew a little before WeChat drops it
_PREPAY_MARGIN = timedelta(minutes=5)


class Services:
    """The use cases bound to one container's ports (what the API and the worker call)."""

    def __init__(
        self, *, settings: Settings, uow_factory: UnitOfWorkPortFactory, gateway: PaymentGateway, clock: Clock
    ) -> None:
        self.settings = settings
        self.uow_factory = uow_factory
        self.gateway = gateway
        self.clock = clock

    # -- helpers -----------------------------------------------------------------------------------

    def sub_merchant(self, principal: Principal, requested: str | None = None) -> SubMerchantSettings:
        if principal.sub_mch_id is not None:
            if requested is not None and requested != principal.sub_mch_id:
                raise NotFound("no such sub-merchant for this key")
            requested = principal.sub_mch_id
        elif requested is None:
            if len(self.settings.sub_merchants) == 1:
                return self.settings.sub_merchants[0]
            raise InvalidRequest("the admin key must say which sub_mch_id", code="sub_mch_id_required")
        sub = self.settings.sub_merchant(requested)
        if sub is None:
            raise NotFound("no such sub-merchant")
        return sub

    def notify_url(self, kind: str) -> str:
        return f"{self.settings.public_base_url}/wechatpay/notify/{kind}"

    async def get_payment(self, principal: Principal, payment_id: str) -> Payment:
        async with self.uow_factory().looking_up() as uow:
            payment = await uow.payments.get(payment_id, sub_mch_id=principal.sub_mch_id)
        if payment is None:
            raise NotFound("no such payment")
        return payment

    def pay_params_for(self, payment: Payment, *, fresh: bool = False) -> PayParams | None:
        if payment.status is not PaymentStatus.PENDING or payment.prepay_id is None:
            return None
        now = self.clock.now()
        if payment.prepay_expires_at is None or payment.prepay_expires_at <= now:
            return None
        if payment.expires_at is not None and payment.expires_at <= now:
            return None  # WeChat no longer accepts it (time_expire); the worker closes it
        sub = self.settings.sub_merchant(payment.sub_mch_id)
        if sub is None:
            return None
        return self.gateway.pay_params(sub, payment.prepay_id, fresh=fresh)

    # -- login ---------------------------------------------------------------------------------------

    async def login(self, principal: Principal, code: str, sub_appid: str | None) -> dict[str, Any]:
        if not code or len(code) > 128:
            raise InvalidRequest("code is required (the wx.login code)")
        if principal.is_admin:
            if sub_appid is None:
                raise InvalidRequest("the admin key must give sub_appid", code="sub_appid_required")
            subs = [s for s in self.settings.sub_merchants if s.sub_appid == sub_appid]
            if not subs:
                raise NotFound("no sub-merchant with that sub_appid")
            sub = subs[0]
        else:
            sub = self.sub_merchant(principal)
            if sub_appid is not None and sub_appid != sub.sub_appid:
                raise NotFound("no such sub_appid for this key")
        try:
            result = await self.gateway.code_to_session(sub, code)
        except LoginError as exc:
            if exc.retryable or exc.errcode in (-1, 45011):
                raise UpstreamUnavailable(
                    f"login failed, retry later (errcode {exc.errcode})", code="login_unavailable"
                ) from None
            raise InvalidRequest(f"login code refused (errcode {exc.errcode})", code="invalid_code") from None
        except TransportError:
            raise UpstreamUnavailable("WeChat login could not be reached") from None
        out: dict[str, Any] = {"openid": result.openid}
        if result.unionid:
            out["unionid"] = result.unionid
        return out

    # -- payments ------------------------------------------------------------------------------------

    async def create_payment(
        self, principal: Principal, cmd: CreatePayment, idempotency_key: str | None
    ) -> tuple[Payment, bool]:
        """Create (or, for a repeated Idempotency-Key, return) a payment; returns (payment, created)."""
        sub = self.sub_merchant(principal, cmd.sub_mch_id)
        inst = self.gateway.institution(sub)
        try:
            currency, client_ip, expires_in = check_create_payment(
                cmd, sub_currency=sub.currency, default_expires_in=self.settings.payment_expires_in
            )
        except (FieldError, ValueError) as exc:
            raise InvalidRequest(str(exc), code="invalid_field") from None
        fingerprint = cmd.fingerprint()
        scope = f"{principal.scope}:payments"

        # Without an idempotency key and with an out_trade_no of our own making (120 random bits),
        # the first attempt reads nothing: the unique key is the only check, and the insert and its
        # event row can go at commit (one statement on PostgreSQL). A clash fails the insert
        # (IntegrityError): the next attempt, with a new number, checks as usual.
        unread = [True] if cmd.out_trade_no is None and idempotency_key is None else []

        async def phase1(uow: UnitOfWorkPort) -> tuple[Payment, bool]:
            now = self.clock.now()
            out_trade_no = cmd.out_trade_no or new_out_trade_no()
            if unread:
                unread.pop()
                taken = False
            else:
                found = await uow.payments.get_by_out_trade_no(inst.mch_id, out_trade_no, sub_mch_id=sub.sub_mch_id)
                taken = found is not None
            # The key is read *after* the out_trade_no: a concurrent twin commits its payment and its key
            # together, so under READ COMMITTED we never see its payment without its key (no false 409).
            if idempotency_key is not None:
                replayed = await replayed_id(uow, scope, idempotency_key, fingerprint)
                if replayed is not None:
                    existing = await uow.payments.get(replayed)
                    if existing is None:  # pragma: no cover - rows are never deleted
                        raise NotFound("no such payment")
                    return existing, False
            if taken:
                raise Conflict("out_trade_no is already used", code="out_trade_no_used")
            payment = new_payment(
                cmd,
                inst,
                sub,
                out_trade_no=out_trade_no,
                currency=currency,
                client_ip=client_ip,
                expires_in=expires_in,
                now=now,
            )
            await uow.payments.add(payment)
            if idempotency_key is not None:
                await uow.idempotency.add(scope, idempotency_key, fingerprint, payment.id, now)
            await uow.events.append(
                type="created",
                source="api",
                data={"out_trade_no": out_trade_no, "amount": cmd.amount, "currency": currency},
                now=now,
                payment_id=payment.id,
                sub_mch_id=sub.sub_mch_id,
            )
            await uow.commit()
            return payment, True

        def phase1_unit() -> UnitOfWorkPort:
            return self.uow_factory().writing_at_commit() if unread else self.uow_factory()

        payment, created = await retrying(phase1_unit, phase1)
        if payment.status is PaymentStatus.CREATED or (
            payment.status is PaymentStatus.PENDING and self._prepay_stale(payment)
        ):
            payment = await self._ensure_prepay(sub, payment)
        return payment, created

    def _prepay_stale(self, payment: Payment) -> bool:
        return payment.prepay_expires_at is None or payment.prepay_expires_at - _PREPAY_MARGIN <= self.clock.now()

    async def _ensure_prepay(self, sub: SubMerchantSettings, payment: Payment) -> Payment:
        """Get a (fresh) ``prepay_id`` by unified order with the stored, identical parameters."""
        if payment.status is PaymentStatus.CREATED and payment.last_error is not None:
            # An earlier call's outcome is unknown: ask WeChat first (research B2, style habit 3).
            resolved = await self._resolve_by_query(sub, payment)
            if resolved.status is not PaymentStatus.CREATED:
                return resolved
        order = OrderRequest.for_payment(payment, self.notify_url("payment"))
        try:
            prepay_id = await self.gateway.create_order(sub, order)
        except MinipayError as exc:  # WeChat's refusal, or no answer at all
            return await self._create_failed(sub, payment, exc)

        # The first attempt decides on the payment as it was read (a copy: an attempt that loses
        # leaves it as it was); its save is conditional on that version, so it reads nothing and its
        # writes can go at commit. A concurrent change makes the next attempt read the locked row.
        snapshot = [dataclasses.replace(payment, events=[])]

        async def phase2(uow: UnitOfWorkPort) -> Payment:
            now = self.clock.now()
            current = snapshot.pop() if snapshot else await uow.payments.get(payment.id, for_update=True)
            if current is None:  # pragma: no cover
                raise NotFound("no such payment")
            if current.status in OPEN_STATUSES:
                current.prepared(prepay_id, now + PREPAY_LIFETIME, now)
                await uow.payments.save(current)
                await uow.record(
                    current.events, source="api", sub_mch_id=current.sub_mch_id, now=now, payment_id=current.id
                )
                await uow.commit()
            return current

        def unit_of_work() -> UnitOfWorkPort:
            return self.uow_factory().writing_at_commit() if snapshot else self.uow_factory()

        return await retrying(unit_of_work, phase2)

    async def _resolve_by_query(self, sub: SubMerchantSettings, payment: Payment) -> Payment:
        try:
            result = await self.gateway.query_order(sub, payment.out_trade_no)
        except MinipayError as exc:
            raise UpstreamUnavailable(
                f"the outcome of payment {payment.id} is not known yet; retry later ({err_code(exc)})"
            ) from None
        if result is not None:
            await apply_payment_result(self.uow_factory, result, source="query", clock=self.clock)
        async with self.uow_factory().reading() as uow:
            fresh = await uow.payments.get(payment.id)
        assert fresh is not None
        return fresh

    async def _create_failed(self, sub: SubMerchantSettings, payment: Payment, exc: MinipayError) -> Payment:
        code = err_code(exc)
        if code == "ORDERPAID":
            return await self._resolve_by_query(sub, payment)
        if code == "ORDERCLOSED":
            await mark_payment_closed(
                self.uow_factory, payment.id, reason="ORDERCLOSED", source="api", clock=self.clock
            )
            raise Conflict(f"WeChat says the order {payment.out_trade_no} is closed", code="payment_closed")
        unknown = is_unknown(exc)

        async def record(uow: UnitOfWorkPort) -> Payment:
            now = self.clock.now()
            current = await uow.payments.get(payment.id, for_update=True)
            assert current is not None
            if current.status is PaymentStatus.CREATED:
                current.last_error = code
                current.updated_at = now
                if not unknown:
                    current.closed(now, reason=code)
                    current.events.clear()  # never existed at WeChat: no payment.closed webhook
                await uow.payments.save(current)
            await uow.events.append(
                type="unifiedorder.unknown" if unknown else "unifiedorder.failed",
                source="api",
                data={"err_code": code},
                now=now,
                payment_id=current.id,
                sub_mch_id=current.sub_mch_id,
            )
            await uow.commit()
            return current

        current = await retrying(self.uow_factory, record)
        if unknown:
            raise UpstreamUnavailable(
                f"WeChat did not confirm payment {current.id} ({code}); retry with the same Idempotency-Key"
            )
        if current.status is not PaymentStatus.CLOSED:
            return current  # someone else got it done meanwhile
        raise UpstreamError(f"WeChat refused payment {current.id}: {code}", code="upstream_rejected")

    async def refresh_pay_params(self, principal: Principal, payment_id: str) -> Payment:
        payment = await self.get_payment(principal, payment_id)
        if payment.status not in OPEN_STATUSES:
            raise Conflict(f"payment is {payment.status}: it cannot be paid", code="invalid_state")
        if payment.expires_at is not None and payment.expires_at <= self.clock.now():
            raise Conflict("payment has expired: create a new one", code="payment_expired")
        sub = self.sub_merchant(Principal(payment.sub_mch_id))
        if payment.status is PaymentStatus.CREATED or self._prepay_stale(payment):
            payment = await self._ensure_prepay(sub, payment)
        return payment

    async def sync_payment(self, principal: Principal, payment_id: str) -> Payment:
        """``?sync=true``: ask WeChat now (order query) and apply the answer like a notification."""
        payment = await self.get_payment(principal, payment_id)
        if payment.status not in OPEN_STATUSES and payment.status is not PaymentStatus.CLOSED:
            return payment
        sub = self.sub_merchant(Principal(payment.sub_mch_id))
        return await self._resolve_by_query(sub, payment)

    async def close_payment(self, principal: Principal, payment_id: str) -> Payment:
        payment = await self.get_payment(principal, payment_id)
        if payment.status is PaymentStatus.CLOSED:
            return payment
        if payment.status not in OPEN_STATUSES:
            raise Conflict(f"payment is {payment.status}: it cannot be closed", code="invalid_state")
        sub = self.sub_merchant(Principal(payment.sub_mch_id))
        try:
            await self.gateway.close_order(sub, payment.out_trade_no)
        except MinipayError as exc:
            code = err_code(exc)
            if code == "ORDERPAID":
                return await self._resolve_by_query(sub, payment)
            if code not in ("ORDERCLOSED", "ORDERNOTEXIST"):
                if is_unknown(exc) and code != "TRADE_STATE_ERROR":
                    raise UpstreamUnavailable(f"closing payment {payment.id} failed ({code}); retry later") from None
                raise Conflict(f"WeChat refused to close payment {payment.id}: {code}", code="close_refused") from None
        await mark_payment_closed(
            self.uow_factory, payment.id, reason="closed_by_merchant", source="api", clock=self.clock
        )
        return await self.get_payment(principal, payment_id)

    async def list_payments(
        self,
        principal: Principal,
        *,
        status: str | None,
        out_trade_no: str | None,
        created_gte: datetime | None,
        created_lt: datetime | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[Payment], str | None]:
        after = await self.payment_anchor(principal, cursor)
        if status is not None and status not in {s.value for s in PaymentStatus}:
            raise InvalidRequest(f"unknown status {status!r}", code="invalid_field")

        async def fetch(n: int) -> list[Payment]:
            async with self.uow_factory().reading() as uow:
                return await uow.payments.search(
                    sub_mch_id=principal.sub_mch_id,
                    status=status,
                    out_trade_no=out_trade_no,
                    created_gte=created_gte,
                    created_lt=created_lt,
                    after=after,
                    limit=n,
                )

        page = await read_page(fetch, limit)
        return page.rows, page.next_cursor

    async def payment_anchor(self, principal: Principal, cursor: str | None) -> Anchor | None:
        """Where the page after ``cursor`` (a payment id the caller may see) starts; None: the first page."""
        if not cursor:
            return None
        async with self.uow_factory().reading() as uow:
            payment = await uow.payments.get(cursor, sub_mch_id=principal.sub_mch_id)
        if payment is None:
            raise InvalidRequest("unknown cursor", code="invalid_cursor")
        return anchor_of(payment)

    # -- refunds ---------------------------------------------------------------------------------------

    async def create_refund(
        self, principal: Principal, payment_id: str, amount: int, reason: str | None, idempotency_key: str
    ) -> tuple[Refund, bool]:
        try:
            check_amount(amount, "amount")
            if reason is not None:
                check_text(reason, "reason", 80)
        except (FieldError, ValueError) as exc:
            raise InvalidRequest(str(exc), code="invalid_field") from None
        fingerprint = hashlib.sha256(json.dumps([payment_id, amount, reason]).encode()).hexdigest()
        scope = f"{principal.scope}:refunds"

        async def phase1(uow: UnitOfWorkPort) -> tuple[Refund, bool]:
            now = self.clock.now()
            payment = await uow.payments.get(payment_id, sub_mch_id=principal.sub_mch_id, for_update=True)
            if payment is None:
                raise NotFound("no such payment")
            # The key is read under the payment's lock: a concurrent twin holding it has committed its
            # refund and its key by now, so a double tap replays instead of failing the remainder check.
            replayed = await replayed_id(uow, scope, idempotency_key, fingerprint)
            if replayed is not None:
                existing = await uow.refunds.get(replayed)
                if existing is None:  # pragma: no cover - rows are never deleted
                    raise NotFound("no such refund")
                return existing, False
            reserved = await uow.refunds.reserved_amount(payment.id)
            try:
                payment.check_refundable(amount, reserved)
            except DomainError as exc:
                raise Conflict(str(exc), code=exc.code) from None
            refund = Refund(
                id=new_id("re"),
                payment_id=payment.id,
                sub_mch_id=payment.sub_mch_id,
                mch_id=payment.mch_id,
                out_refund_no=new_out_refund_no(),
                amount=amount,
                currency=payment.currency,
                reason=reason,
                created_at=now,
                updated_at=now,
            )
            await uow.refunds.add(refund)
            # Bump the payment's version: a concurrent refund that read the same remainder must retry.
            payment.updated_at = now
            await uow.payments.save(payment)
            await uow.idempotency.add(scope, idempotency_key, fingerprint, refund.id, now)
            await uow.events.append(
                type="refund.created",
                source="api",
                data={"out_refund_no": refund.out_refund_no, "amount": amount},
                now=now,
                payment_id=payment.id,
                refund_id=refund.id,
                sub_mch_id=refund.sub_mch_id,
            )
            await uow.commit()
            return refund, True

        refund, created = await retrying(self.uow_factory, phase1)
        if refund.status is RefundStatus.PENDING:
            refund = await self.submit_refund(refund)
        return refund, created

    async def submit_refund(self, refund: Refund) -> Refund:
        """Send (or re-send, with the stored ``out_refund_no``) a pending refund to WeChat."""
        async with self.uow_factory().reading() as uow:
            payment = await uow.payments.get(refund.payment_id)
        assert payment is not None
        sub = self.settings.sub_merchant(refund.sub_mch_id)
        if sub is None:
            raise NotFound("sub-merchant no longer configured")
        request = RefundRequest(
            out_trade_no=payment.out_trade_no,
            out_refund_no=refund.out_refund_no,
            total_fee=payment.amount,
            refund_fee=refund.amount,
            refund_fee_type=refund.currency,
            notify_url=self.notify_url("refund"),
            refund_desc=refund.reason,
        )
        refund_id: str | None = None
        failure: str | None = None
        try:
            refund_id = await self.gateway.create_refund(sub, request)
        except MinipayError as exc:
            if not is_unknown(exc):
                failure = err_code(exc)
            else:
                log.warning(
                    "refund outcome unknown; will be retried with the same out_refund_no",
                    extra={"refund_id": refund.id},
                )

        async def phase2(uow: UnitOfWorkPort) -> Refund:
            now = self.clock.now()
            current_payment = await uow.payments.get(refund.payment_id, for_update=True)
            current = await uow.refunds.get(refund.id, for_update=True)
            assert current is not None
            assert current_payment is not None
            if failure is not None:
                if current.status is RefundStatus.PENDING:
                    current.failed(failure, now)
                else:
                    log.warning(
                        "a resend of an accepted refund was refused; the refund is kept",
                        extra={"refund_id": current.id, "err_code": failure, "status": str(current.status)},
                    )
                # else: WeChat had accepted it (a twin request or the worker got there first); a refused
                # resend says nothing about that refund, which WeChat is paying back: keep it reserved.
            elif refund_id is not None:
                current.accepted(refund_id, now)
            # else: the outcome is unknown; the refund stays pending and is re-submitted later with the
            # same out_refund_no (by a retry with the same Idempotency-Key, or by the worker).
            if current.events:
                await uow.refunds.save(current)
                await record_refund_events(uow, current, current_payment, source="api", now=now)
                await uow.commit()
            return current

        return await retrying(self.uow_factory, phase2)

    async def get_refund(self, principal: Principal, refund_id: str) -> Refund:
        async with self.uow_factory().looking_up() as uow:
            refund = await uow.refunds.get(refund_id, sub_mch_id=principal.sub_mch_id)
        if refund is None:
            raise NotFound("no such refund")
        return refund

    async def list_refunds(self, principal: Principal, payment_id: str) -> list[Refund]:
        await self.get_payment(principal, payment_id)
        async with self.uow_factory().reading() as uow:
            return await uow.refunds.for_payment(payment_id)
