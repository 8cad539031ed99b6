"""The repositories of the unit of work: every SQL statement of the service, its worker and its console,
over SQLAlchemy Core (async), one module per area.

- ``uow.payments``, ``uow.refunds``: :class:`PaymentRepository`, :class:`RefundRepository` (``_payments``:
  load, optionally locked; insert; save with a version check);
- ``uow.events``, ``uow.outbox``, ``uow.idempotency``: :class:`EventLog`, :class:`Outbox`,
  :class:`IdempotencyKeys` (``_log``);
- the writes of a unit of work that sends them at commit: :class:`WriteBatch`, :func:`batch_statement`
  (``_batch``: on PostgreSQL, a save, its event rows and its outbox event in one statement);
- ``uow.webhooks``: :class:`WebhookRepository` (``_webhooks``: endpoints, events, deliveries and their leases);
- ``uow.jobs``: :class:`JobRepository` (``_jobs``: the worker's job queue);
- ``uow.reconciliation``: :class:`ReconciliationRepository` (``_reconciliation``: the ledger, runs, discrepancies);
- ``uow.console``: :class:`ConsoleQueries` (``_console``: the console's read model);
- ``uow.health``: :class:`HealthQueries` (``_health``: the readiness ping, the backlog behind ``/metrics``).

Row mappers shared between modules are public here (:func:`payment_from_row`, :func:`refund_from_row`).
Code outside this package (and ``db.py`` and the migrations) builds no SQL: it calls these methods on a
unit of work (``async with uow_factory() as uow:``), which owns the transaction.
"""

from __future__ import annotations

from minipay.server.repositories._base import (
    PAYMENT_FIELDS,
    REFUND_FIELDS,
    ConcurrentUpdate,
    Repository,
    Transaction,
    WriteBatch,
    payment_from_row,
    refund_from_row,
)
from minipay.server.repositories._batch import batch_statement
from minipay.server.repositories._console import Attention, ConsoleQueries, PaymentFilter
from minipay.server.repositories._health import BacklogRows, HealthQueries
from minipay.server.repositories._jobs import Job, JobRepository, JobStatus, QueueOverview, job_from_row
from minipay.server.repositories._log import EventLog, IdempotencyKeys, Outbox
from minipay.server.repositories._payments import PaymentRepository, RefundRepository
from minipay.server.repositories._reconciliation import (
    DiscrepancyRow,
    LedgerPayment,
    LedgerRefund,
    ReconciliationRepository,
    RunRecord,
)
from minipay.server.repositories._webhooks import WebhookRepository

__all__ = [
    "PAYMENT_FIELDS",
    "REFUND_FIELDS",
    "Attention",
    "BacklogRows",
    "ConcurrentUpdate",
    "ConsoleQueries",
    "DiscrepancyRow",
    "EventLog",
    "HealthQueries",
    "IdempotencyKeys",
    "Job",
    "JobRepository",
    "JobStatus",
    "LedgerPayment",
    "LedgerRefund",
    "Outbox",
    "PaymentFilter",
    "PaymentRepository",
    "QueueOverview",
    "ReconciliationRepository",
    "RefundRepository",
    "Repository",
    "RunRecord",
    "Transaction",
    "WebhookRepository",
    "WriteBatch",
    "batch_statement",
    "job_from_row",
    "payment_from_row",
    "refund_from_row",
]
