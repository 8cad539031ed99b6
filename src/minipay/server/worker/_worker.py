"""The worker: schedules and runs the jobs that close the loops the service opens.

Four of WeChat's layers are the service's and this worker's together (research B5): notifications
(service), the mini program asking the backend (service), **active queries** and the **T+1 bill**
(here), plus expiry, refund follow-up and webhook delivery.

Jobs (``worker_jobs``, one row per ``(kind, key)``):

* ``payment.followup`` (key: payment id) — from ``created_at + query_delay`` the payment is queried
  with :data:`ACTIVE_QUERY` backoff until it is final; SUCCESS is applied through the service's
  ``apply_payment_result`` (the same function as a notification, so exactly once). Once past
  ``expires_at`` the order is closed at WeChat; ``ORDERPAID`` on close means it was paid: query and
  apply.
* ``refund.followup`` (key: refund id) — a refund that is not final is queried with
  :data:`REFUND_QUERY` backoff until it is; one already final (a notification came) is queried once
  to cross-check it, and a disagreement is recorded as a ``refund_status_mismatch`` discrepancy. A
  ``processing`` refund (WeChat gave it a ``refund_id``) that the query answers ``REFUNDNOTEXIST`` is
  recorded once as ``refund_missing_at_wechat`` and still followed with the same backoff.
* ``bill.reconcile`` (key: ``<sub_mch_id>:<YYYY-MM-DD>``) — from 10:00 China time on T+1 the bill of
  day T is downloaded and compared with the ledger (``minipay.server.worker._reconcile``).

Webhooks are delivered by the service's :class:`~minipay.server.webhooks.WebhookDispatcher` (it leases
its own rows): under :meth:`Worker.run_forever` in a loop of its own beside the jobs, concurrently and
each attempt within its deadline, so a hanging receiver never delays a job; :meth:`Worker.tick` alone
(tests, the demo) delivers one batch at its end.
Every job is idempotent: a job taken over from a killed worker may run a second time, harmlessly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import partial
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from minipay.protocol import (
    CHINA_TZ,
    OrderClosedError,
    OrderNotFoundError,
    OrderPaidError,
    TradeStateError,
)
from minipay.server import tracing
from minipay.server.bootstrap import Container
from minipay.server.domain import OPEN_STATUSES, ApplyOutcome, PaymentResult
from minipay.server.logs import bind, log_context, new_request_id
from minipay.server.ports import Clock, PaymentGateway, WebhookSender
from minipay.server.services import Services, apply_payment_result, apply_refund_result, mark_payment_closed
from minipay.server.settings import Settings, SubMerchantSettings
from minipay.server.uow import UnitOfWork, UnitOfWorkFactory
from minipay.server.webhooks import DeliveryLimits, WebhookDispatcher
from minipay.server.worker._backoff import ACTIVE_QUERY, JOB_ERROR, REFUND_QUERY
from minipay.server.worker._queue import Job, JobQueue
from minipay.server.worker._reconcile import BillSource, ClientBillSource, Reconciler

__all__ = [
    "BILL_RECONCILE",
    "PAYMENT_FOLLOWUP",
    "REFUND_FOLLOWUP",
    "TickSummary",
    "Worker",
    "WorkerConfig",
]

log = logging.getLogger("minipay.worker")

PAYMENT_FOLLOWUP = "payment.followup"
REFUND_FOLLOWUP = "refund.followup"
BILL_RECONCILE = "bill.reconcile"

#: ``trade_state`` values after which a payment needs no more queries (spec 8.3).
FINAL_TRADE_STATES = frozenset({"SUCCESS", "REFUND", "CLOSED", "REVOKED", "PAYERROR"})
#: WeChat closes an order only 5 minutes after its creation (spec 9, 16.4).
MIN_CLOSE_AGE = timedelta(minutes=5)
CLOSE_RETRY = timedelta(seconds=30)
#: ``refund_status`` values after which a refund needs no more queries (spec 11.2).
FINAL_REFUND_STATES = frozenset({"SUCCESS", "REFUNDCLOSE", "CHANGE"})

# A refund final here, and what WeChat's refund query may say about it without a conflict. A refund
# refused at submission never existed at WeChat, hence REFUNDNOTEXIST for "failed".
_LOCAL_TO_WECHAT_REFUND = {
    "succeeded": frozenset({"SUCCESS"}),
    "failed": frozenset({"REFUNDCLOSE", "CHANGE", "REFUNDNOTEXIST"}),
}


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Timings of the worker. Durations are measured on the injected clock."""

    #: First active query this long after the payment was created (WeChat's "business time 1").
    query_delay: timedelta = timedelta(seconds=60)
    #: First refund query this long after the refund was created.
    refund_query_delay: timedelta = timedelta(seconds=60)
    #: A claimed job belongs to its worker this long; a killed worker's job is taken over after it.
    lease: timedelta = timedelta(seconds=120)
    batch_size: int = 20
    #: Real seconds between ticks of :meth:`Worker.run_forever`.
    poll_interval: float = 1.0
    #: Bills: reconcile this many past China-time days (catches up after a stop), from this time on T+1.
    bill_lookback_days: int = 2
    bill_ready_time: time = time(10, 0)
    bills: bool = True
    webhooks: bool = True
    webhook_batch: int = 100
    #: A job whose attempts (failures, not planned follow-ups) reach this is left ``dead``.
    max_attempts: int = 50


@dataclass(slots=True)
class TickSummary:
    """What one :meth:`Worker.tick` did (for logs, tests and the CLI)."""

    scheduled: int = 0
    ran: int = 0
    completed: int = 0
    retried: int = 0
    failed: int = 0
    lost: int = 0  # a lease that ran out while the job ran (another worker took it)
    webhooks: int = 0
    results: list[tuple[str, str, Mapping[str, Any]]] = field(default_factory=list)

    @property
    def idle(self) -> bool:
        return self.ran == 0 and self.webhooks == 0 and self.scheduled == 0


class _Retry(Exception):
    """Raised by a handler: run again at ``run_at`` (a planned follow-up, not a failure)."""

    def __init__(self, run_at: datetime, payload: Mapping[str, Any], reason: str) -> None:
        super().__init__(reason)
        self.run_at = run_at
        self.payload = payload


class Worker:
    """Runs the jobs; build one per process (or per task) from the service's container.

    >>> worker = Worker(container)                      # doctest: +SKIP
    >>> summary = await worker.tick()                   # schedule + run every due job once
    >>> await worker.run_forever(stop_event)            # what ``minipay worker`` does
    """

    def __init__(
        self,
        *,
        settings: Settings,
        engine: AsyncEngine,
        gateway: PaymentGateway,
        clock: Clock,
        webhook_sender: WebhookSender | None = None,
        uow_factory: UnitOfWorkFactory | None = None,
        config: WorkerConfig | None = None,
        bill_source: BillSource | None = None,
        services: Services | None = None,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.gateway = gateway
        self.clock = clock
        self.webhook_sender = webhook_sender
        self.uow_factory: UnitOfWorkFactory = uow_factory or (lambda: UnitOfWork(engine))
        self.config = config or WorkerConfig()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.queue = JobQueue(self.uow_factory, clock, lease=self.config.lease)
        self.services = services
        self._owned_bills = None
        if bill_source is None:
            self._owned_bills = ClientBillSource(settings, client_for=getattr(gateway, "client_for", None))
            bill_source = self._owned_bills
        self.bill_source = bill_source
        self.reconciler = Reconciler(self.uow_factory, clock, self.bill_source)
        self._bills_enqueued: set[str] = set()
        self._stop: anyio.Event | None = None
        self._webhooks: WebhookDispatcher | None = None
        self._webhooks_apart = False  # run_forever delivers in its own loop, not in the tick
        self._handlers: dict[str, Callable[[Job], Awaitable[Mapping[str, Any]]]] = {
            PAYMENT_FOLLOWUP: self._payment_followup,
            REFUND_FOLLOWUP: self._refund_followup,
            BILL_RECONCILE: self._bill_reconcile,
        }

    @classmethod
    def from_container(cls, container: Container, **kwargs: Any) -> Worker:
        """Build from the service's composition root (:func:`~minipay.server.bootstrap.build_container`)."""
        return cls(
            settings=container.settings,
            engine=container.engine,
            gateway=container.gateway,
            clock=container.clock,
            webhook_sender=container.webhook_sender,
            uow_factory=container.uow_factory,
            services=container.services,
            **kwargs,
        )

    async def aclose(self) -> None:
        """Close what the worker built itself (the bill source's HTTP clients)."""
        if self._owned_bills is not None:
            await self._owned_bills.aclose()

    # -- scheduling --------------------------------------------------------------------------------

    async def schedule(self) -> int:
        """Enqueue the jobs that should exist and do not yet (idempotent; cheap when nothing is new)."""
        now = self.clock.now()
        new: list[tuple[str, str, Mapping[str, Any], datetime | None]] = []
        async with self.uow_factory().reading() as uow:
            payments = await uow.jobs.unscheduled_payments(PAYMENT_FOLLOWUP, statuses=OPEN_STATUSES, limit=1000)
            refunds = await uow.jobs.unscheduled_refunds(REFUND_FOLLOWUP, limit=1000)
        for pid, created_at in payments:
            new.append((PAYMENT_FOLLOWUP, pid, {"payment_id": pid}, created_at + self.config.query_delay))
        for rid, created_at in refunds:
            new.append((REFUND_FOLLOWUP, rid, {"refund_id": rid}, created_at + self.config.refund_query_delay))
        bill_keys: list[str] = []
        window: set[str] = set()
        if self.config.bills:
            today = now.astimezone(CHINA_TZ).date()
            for back in range(1, self.config.bill_lookback_days + 1):
                day = today - timedelta(days=back)
                ready = datetime.combine(day + timedelta(days=1), self.config.bill_ready_time, tzinfo=CHINA_TZ)
                for sub in self.settings.sub_merchants:
                    key = f"{sub.sub_mch_id}:{day.isoformat()}"
                    window.add(key)
                    if key in self._bills_enqueued:  # known to exist: no write every tick
                        continue
                    bill_keys.append(key)
                    new.append((BILL_RECONCILE, key, {"sub_mch_id": sub.sub_mch_id, "date": day.isoformat()}, ready))
        self._bills_enqueued &= window  # days that left the window are forgotten
        if not new:
            return 0
        added = await self.queue.enqueue_many(new)
        self._bills_enqueued.update(bill_keys)
        return added

    # -- running -----------------------------------------------------------------------------------

    async def tick(self) -> TickSummary:
        """Schedule, then run every job that is due now (several batches), then deliver webhooks."""
        summary = TickSummary()
        summary.scheduled = await self.schedule()
        seen: set[int] = set()
        while True:
            jobs = await self.queue.claim(self.name, limit=self.config.batch_size)
            # A job re-queued for "now" would be claimed again in this tick: leave it to the next one.
            fresh = [job for job in jobs if job.id not in seen]
            for job in jobs:
                if job.id in seen:
                    await self.queue.retry(job, job.run_at, count_attempt=False)
            if not fresh:
                break
            for job in fresh:
                seen.add(job.id)
                if self._stop is not None and self._stop.is_set():
                    # Stopping: hand the claimed but unstarted jobs back at once (not after a lease).
                    await self.queue.retry(job, job.run_at, count_attempt=False)
                    continue
                await self._run(job, summary)
            if self._stop is not None and self._stop.is_set():
                break
        webhooks = self._webhook_dispatcher()
        if webhooks is not None and not self._webhooks_apart:
            summary.webhooks = await webhooks.deliver_batch(limit=self.config.webhook_batch)
        return summary

    def _webhook_dispatcher(self) -> WebhookDispatcher | None:
        if not self.config.webhooks or self.webhook_sender is None:
            return None
        if self._webhooks is None:
            self._webhooks = WebhookDispatcher(
                self.uow_factory, self.webhook_sender, self.clock, limits=DeliveryLimits.from_settings(self.settings)
            )
        return self._webhooks

    async def run_until_idle(self, *, max_ticks: int = 20) -> list[TickSummary]:
        """Tick until a tick finds nothing to do (tests and the demo call this after moving the clock)."""
        summaries = []
        for _ in range(max_ticks):
            summary = await self.tick()
            summaries.append(summary)
            if summary.idle:
                break
        return summaries

    async def run_forever(self, stop: anyio.Event | None = None) -> None:
        """Tick every ``poll_interval`` real seconds until ``stop`` is set (or the task is cancelled);
        webhooks are delivered beside the ticks, in a loop of their own."""
        stop = stop or anyio.Event()
        self._stop = stop  # a tick in progress stops claiming new jobs once it is set
        log.info("worker %s started", self.name)
        webhooks = self._webhook_dispatcher()
        try:
            async with anyio.create_task_group() as group:
                if webhooks is not None:
                    self._webhooks_apart = True
                    group.start_soon(partial(webhooks.run, stop, interval=self.config.poll_interval))
                await self._tick_forever(stop)
        finally:
            self._webhooks_apart = False
        log.info("worker %s stopped", self.name)

    async def _tick_forever(self, stop: anyio.Event) -> None:
        while not stop.is_set():
            try:
                summary = await self.tick()
                if summary.ran or summary.webhooks:
                    log.info(
                        "worker tick: ran=%d completed=%d retried=%d failed=%d webhooks=%d",
                        summary.ran,
                        summary.completed,
                        summary.retried,
                        summary.failed,
                        summary.webhooks,
                    )
            except Exception:  # a broken tick (database down...) must not stop the worker
                log.exception("worker tick failed")
            with anyio.move_on_after(self.config.poll_interval):
                await stop.wait()

    async def _run(self, job: Job, summary: TickSummary) -> None:
        # Each run of a job is a unit of its own in the logs (and traces): a fresh ``job_…`` id, the
        # job's id and kind, and the payment or refund it follows (the repositories add out_trade_no...).
        ids = {
            "payment_id": job.key if job.kind == PAYMENT_FOLLOWUP else None,
            "refund_id": job.key if job.kind == REFUND_FOLLOWUP else None,
        }
        rid = new_request_id("job_")
        attributes = {"minipay.job_kind": job.kind, "minipay.job_id": job.id, "minipay.request_id": rid}
        with (
            log_context(rid, job_id=job.id, job_kind=job.kind, **ids),
            tracing.span(f"worker.job {job.kind}", attributes),
        ):
            await self._run_job(job, summary)

    async def _run_job(self, job: Job, summary: TickSummary) -> None:
        summary.ran += 1
        handler = self._handlers.get(job.kind)
        if handler is None:
            await self.queue.fail(job, f"no handler for job kind {job.kind!r}")
            summary.failed += 1
            return
        result: Mapping[str, Any] = {}
        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._heartbeat, job)
            try:
                result = await handler(job)
            except Exception as exc:  # kept outside the task group: no ExceptionGroup wrapping
                error = exc
            finally:
                tg.cancel_scope.cancel()
        if isinstance(error, _Retry):
            ok = await self.queue.retry(job, error.run_at, payload=error.payload, count_attempt=False)
            summary.retried += ok
            summary.lost += not ok
            return
        if error is not None:
            await self._failed(job, error, summary)
            return
        if await self.queue.complete(job, result):
            summary.completed += 1
            summary.results.append((job.kind, job.key, result))
        else:
            summary.lost += 1

    async def _heartbeat(self, job: Job) -> None:
        # Real seconds: a long job (a slow bill download) keeps its lease while it is alive.
        interval = max(self.config.lease.total_seconds() / 3, 0.5)
        while True:
            await anyio.sleep(interval)
            try:
                await self.queue.extend(job)
            except Exception:  # a database blip: a missed renewal, not a reason to cut the job off
                log.warning("job %s %s: lease renewal failed", job.kind, job.key, exc_info=True)

    async def _failed(self, job: Job, exc: Exception, summary: TickSummary) -> None:
        error = _describe(exc)
        # Every failure is retried with backoff (a configuration fixed later resumes the job); only a
        # job that failed max_attempts times is given up, left ``dead`` with its last error.
        if job.attempts >= min(job.max_attempts, self.config.max_attempts):
            log.error("job %s %s gave up after %d attempts: %s", job.kind, job.key, job.attempts, error)
            ok = await self.queue.fail(job, error)
            summary.failed += ok
        else:
            run_at = self.clock.now() + JOB_ERROR.gap(job.attempts - 1)
            log.warning(
                "job %s %s failed (attempt %d), retry at %s: %s", job.kind, job.key, job.attempts, run_at, error
            )
            ok = await self.queue.retry(job, run_at, error=error)
            summary.retried += ok
        summary.lost += not ok

    # -- handlers ----------------------------------------------------------------------------------

    def _sub(self, sub_mch_id: str) -> SubMerchantSettings:
        sub = self.settings.sub_merchant(sub_mch_id)
        if sub is None:
            raise LookupError(f"sub-merchant {sub_mch_id} is not configured")
        return sub

    async def _payment_followup(self, job: Job) -> Mapping[str, Any]:
        async with self.uow_factory().reading() as uow:
            payment = await uow.payments.get(job.key)
        if payment is None:
            return {"outcome": "unknown_payment"}
        out_trade_no, sub_mch_id = payment.out_trade_no, payment.sub_mch_id
        expires_at, created_at = payment.expires_at, payment.created_at
        bind(out_trade_no=out_trade_no)
        if payment.status not in OPEN_STATUSES:
            return {"outcome": "already_final", "status": str(payment.status)}
        sub = self._sub(sub_mch_id)
        gateway = self.gateway

        result = await gateway.query_order(sub, out_trade_no)
        if result is not None and result.trade_state in FINAL_TRADE_STATES:
            outcome = await self._apply_payment(result, source="query")
            return {"outcome": str(outcome), "trade_state": result.trade_state, "via": "query"}

        now = self.clock.now()
        if expires_at is not None and now >= expires_at:
            try:
                return await self._expire(job.key, out_trade_no, sub, known=result is not None)
            except TradeStateError:
                # WeChat refuses to close an order younger than 5 minutes (spec 9): not a failure,
                # close it once it is old enough.
                run_at = max(now + CLOSE_RETRY, created_at + MIN_CLOSE_AGE)
                raise _Retry(run_at, {**job.payload, "close_refused": True}, "too early to close") from None

        queries = int(job.payload.get("queries", 0))
        run_at = now + ACTIVE_QUERY.gap(queries)
        if expires_at is not None and run_at > expires_at:
            run_at = expires_at
        state = result.trade_state if result is not None else "ORDERNOTEXIST"
        raise _Retry(run_at, {**job.payload, "queries": queries + 1, "last_state": state}, f"still {state}")

    async def _expire(
        self, payment_id: str, out_trade_no: str, sub: SubMerchantSettings, *, known: bool
    ) -> Mapping[str, Any]:
        gateway = self.gateway
        if known:
            try:
                await gateway.close_order(sub, out_trade_no)
                closed_by = "closeorder"
            except OrderPaidError:
                # The user won the race: the order is paid. Query for the payment details and apply.
                paid = await gateway.query_order(sub, out_trade_no)
                if paid is None or paid.trade_state not in ("SUCCESS", "REFUND"):
                    state = paid.trade_state if paid else "ORDERNOTEXIST"
                    raise RuntimeError(f"closeorder said ORDERPAID but orderquery says {state}") from None
                outcome = await self._apply_payment(paid, source="close")
                return {"outcome": str(outcome), "trade_state": paid.trade_state, "via": "closeorder ORDERPAID"}
            except OrderClosedError:
                closed_by = "closeorder ORDERCLOSED"
            except OrderNotFoundError:
                closed_by = "closeorder ORDERNOTEXIST"
        else:
            # WeChat never heard of the order (unified order never reached it): nothing to close there.
            closed_by = "expired (unknown at WeChat)"
        outcome = await mark_payment_closed(
            self.uow_factory, payment_id, reason="expired", source="expiry", clock=self.clock
        )
        return {"outcome": str(outcome), "trade_state": "CLOSED", "via": closed_by}

    async def _apply_payment(self, result: PaymentResult, *, source: str) -> ApplyOutcome:
        return await apply_payment_result(self.uow_factory, result, source=source, clock=self.clock)

    async def _refund_followup(self, job: Job) -> Mapping[str, Any]:
        async with self.uow_factory().reading() as uow:
            found = await uow.refunds.get(job.key)
        if found is None:
            return {"outcome": "unknown_refund"}
        status, out_refund_no = str(found.status), found.out_refund_no
        sub_mch_id, wechat_refund_id = found.sub_mch_id, found.refund_id
        bind(out_refund_no=out_refund_no)
        sub = self._sub(sub_mch_id)
        result = await self.gateway.query_refund(sub, out_refund_no)
        wechat = result.refund_status if result is not None else "REFUNDNOTEXIST"

        if status in _LOCAL_TO_WECHAT_REFUND:
            # Final here already (a notification, or an earlier query): cross-check it once.
            if wechat in _LOCAL_TO_WECHAT_REFUND[status]:
                return {"outcome": "confirmed", "refund_status": wechat}
            if wechat == "PROCESSING":
                queries = int(job.payload.get("queries", 0))
                run_at = self.clock.now() + REFUND_QUERY.gap(queries)
                raise _Retry(run_at, {**job.payload, "queries": queries + 1}, "WeChat still PROCESSING")
            await self.reconciler.record_refund_conflict(sub_mch_id, job.key, out_refund_no, status, wechat)
            return {"outcome": "conflict", "local": status, "refund_status": wechat}

        if status == "pending" and result is None and self.services is not None:
            # Never accepted by WeChat (the submission's outcome was unknown and it did not arrive):
            # send it again with the same out_refund_no (research B2), then keep following it.
            async with self.uow_factory() as uow:
                refund = await uow.refunds.get(job.key)
            if refund is not None:
                await self.services.submit_refund(refund)
        payload = dict(job.payload)
        if status == "processing" and result is None:
            # WeChat accepted it (we hold its refund_id) but no longer knows it: a human must look.
            # Recorded once; money and status stay as they are, and the refund is still followed
            # (with the same backoff) in case WeChat answers later.
            if await self.reconciler.record_refund_missing(
                sub_mch_id, job.key, out_refund_no, wechat_refund_id, status
            ):
                log.warning(
                    "refund %s (out_refund_no %s, refund_id %s) is processing here but WeChat answers REFUNDNOTEXIST",
                    job.key,
                    out_refund_no,
                    wechat_refund_id,
                )
            payload["missing_at_wechat"] = True
        if result is not None and wechat in FINAL_REFUND_STATES:
            mch_id = self.settings.institution(sub.institution).mch_id
            outcome = await apply_refund_result(
                self.uow_factory, result, mch_id=mch_id, source="query", clock=self.clock
            )
            return {"outcome": str(outcome), "refund_status": wechat, "via": "query"}
        queries = int(job.payload.get("queries", 0))
        run_at = self.clock.now() + REFUND_QUERY.gap(queries)
        raise _Retry(run_at, {**payload, "queries": queries + 1, "last_state": wechat}, f"still {wechat}")

    async def _bill_reconcile(self, job: Job) -> Mapping[str, Any]:
        sub = self._sub(str(job.payload["sub_mch_id"]))
        day = date.fromisoformat(str(job.payload["date"]))
        run = await self.reconciler.reconcile(sub, day, replace=False)
        if run.status == "not_ready":
            raise _Retry(self.clock.now() + timedelta(minutes=30), job.payload, "bill not ready")
        return {"outcome": run.status, "discrepancies": run.discrepancy_count}


def _describe(exc: Exception) -> str:
    with contextlib.suppress(Exception):
        return f"{type(exc).__name__}: {exc}"[:2000]
    return type(exc).__name__
