"""Reconciliation as a pure function: a day's bill against the day's ledger -> discrepancies.

WeChat's recipe (T+1 bill vs local orders) and the house rule: every difference becomes a
discrepancy row for a human or a follow-up job; nothing here edits money. Amounts are ``int``
minor units on both sides (the bill's decimal major units are converted by the caller with
``minipay.protocol.parse_major``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from minipay.server import db

__all__ = [
    "DISCREPANCY_KINDS",
    "REFUND_JOB_KINDS",
    "Discrepancy",
    "RefundRecord",
    "TradeRecord",
    "compare",
]

DISCREPANCY_KINDS: Final = (
    "missing_in_ledger",  # paid at WeChat, not paid (or unknown) here
    "missing_in_bill",  # paid here, absent from WeChat's bill
    "amount_mismatch",
    "currency_mismatch",
    "transaction_id_mismatch",
    "refund_missing_in_ledger",
    "refund_missing_in_bill",
    "refund_amount_mismatch",
    "refund_currency_mismatch",
    "duplicate_in_bill",
    "refund_duplicate_in_bill",
    "refund_status_mismatch",  # a refund notification and WeChat's refund query disagree
    "refund_missing_at_wechat",  # a refund WeChat accepted (refund_id held) that its refund query no longer knows
)

#: Kinds recorded by the refund follow-up job, not by a bill run (a bill run's replace keeps them);
#: the table holds one row per refund and kind (``db.REFUND_JOB_KINDS``, its unique index).
REFUND_JOB_KINDS: Final = db.REFUND_JOB_KINDS


@dataclass(frozen=True, slots=True)
class TradeRecord:
    """A successful payment, as the bill or the ledger tells it."""

    sub_mch_id: str
    out_trade_no: str
    transaction_id: str | None
    total_fee: int
    fee_type: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RefundRecord:
    """A refund accepted by WeChat (PROCESSING counts as submitted; spec 13.2)."""

    sub_mch_id: str
    out_trade_no: str
    out_refund_no: str
    refund_id: str | None
    refund_fee: int
    fee_type: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One difference between the bill and the ledger."""

    kind: str
    sub_mch_id: str
    detail: str
    out_trade_no: str | None = None
    transaction_id: str | None = None
    out_refund_no: str | None = None
    refund_id: str | None = None
    bill: Mapping[str, Any] | None = field(default=None)
    ledger: Mapping[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.kind not in DISCREPANCY_KINDS:
            raise ValueError(f"unknown discrepancy kind {self.kind!r}")

    @property
    def sort_key(self) -> tuple[str, str, str, str]:
        return (self.sub_mch_id, self.out_trade_no or "", self.out_refund_no or "", self.kind)


def _index_trades(records: Iterable[TradeRecord], side: str, out: list[Discrepancy]) -> dict[str, TradeRecord]:
    index: dict[str, TradeRecord] = {}
    for record in records:
        if record.out_trade_no in index:
            if side == "bill":
                out.append(
                    Discrepancy(
                        kind="duplicate_in_bill",
                        sub_mch_id=record.sub_mch_id,
                        out_trade_no=record.out_trade_no,
                        transaction_id=record.transaction_id,
                        bill=record.as_json(),
                        detail=f"the bill lists payment {record.out_trade_no} more than once",
                    )
                )
            continue
        index[record.out_trade_no] = record
    return index


def _index_refunds(records: Iterable[RefundRecord], side: str, out: list[Discrepancy]) -> dict[str, RefundRecord]:
    index: dict[str, RefundRecord] = {}
    for record in records:
        if record.out_refund_no in index:
            if side == "bill":
                out.append(
                    Discrepancy(
                        kind="refund_duplicate_in_bill",
                        sub_mch_id=record.sub_mch_id,
                        out_trade_no=record.out_trade_no,
                        out_refund_no=record.out_refund_no,
                        refund_id=record.refund_id,
                        bill=record.as_json(),
                        detail=f"the bill lists refund {record.out_refund_no} more than once",
                    )
                )
            continue
        index[record.out_refund_no] = record
    return index


def compare(
    bill_trades: Iterable[TradeRecord],
    ledger_trades: Iterable[TradeRecord],
    bill_refunds: Iterable[RefundRecord] = (),
    ledger_refunds: Iterable[RefundRecord] = (),
) -> list[Discrepancy]:
    """Every difference between a bill and the ledger of the same day and sub-merchant, sorted.

    >>> t = TradeRecord("1900000110", "A1", "42", 1000, "HKD")
    >>> compare([t], [t])
    []
    >>> [d.kind for d in compare([t], [])]
    ['missing_in_ledger']
    """
    found: list[Discrepancy] = []
    bill = _index_trades(bill_trades, "bill", found)
    ledger = _index_trades(ledger_trades, "ledger", found)

    for no, b in bill.items():
        led = ledger.get(no)
        if led is None:
            found.append(
                Discrepancy(
                    kind="missing_in_ledger",
                    sub_mch_id=b.sub_mch_id,
                    out_trade_no=no,
                    transaction_id=b.transaction_id,
                    bill=b.as_json(),
                    detail=f"paid at WeChat ({b.total_fee} {b.fee_type}) but not recorded as paid on this day",
                )
            )
            continue
        if b.fee_type != led.fee_type:
            found.append(
                Discrepancy(
                    kind="currency_mismatch",
                    sub_mch_id=b.sub_mch_id,
                    out_trade_no=no,
                    transaction_id=b.transaction_id,
                    bill=b.as_json(),
                    ledger=led.as_json(),
                    detail=f"currency: bill {b.fee_type}, ledger {led.fee_type}",
                )
            )
        elif b.total_fee != led.total_fee:
            found.append(
                Discrepancy(
                    kind="amount_mismatch",
                    sub_mch_id=b.sub_mch_id,
                    out_trade_no=no,
                    transaction_id=b.transaction_id,
                    bill=b.as_json(),
                    ledger=led.as_json(),
                    detail=f"amount: bill {b.total_fee}, ledger {led.total_fee} (minor units of {b.fee_type})",
                )
            )
        if b.transaction_id and led.transaction_id and b.transaction_id != led.transaction_id:
            found.append(
                Discrepancy(
                    kind="transaction_id_mismatch",
                    sub_mch_id=b.sub_mch_id,
                    out_trade_no=no,
                    transaction_id=b.transaction_id,
                    bill=b.as_json(),
                    ledger=led.as_json(),
                    detail=f"transaction_id: bill {b.transaction_id}, ledger {led.transaction_id}",
                )
            )
    for no, led in ledger.items():
        if no not in bill:
            found.append(
                Discrepancy(
                    kind="missing_in_bill",
                    sub_mch_id=led.sub_mch_id,
                    out_trade_no=no,
                    transaction_id=led.transaction_id,
                    ledger=led.as_json(),
                    detail=f"recorded as paid here ({led.total_fee} {led.fee_type}) but absent from WeChat's bill",
                )
            )

    bill_r = _index_refunds(bill_refunds, "bill", found)
    ledger_r = _index_refunds(ledger_refunds, "ledger", found)
    for no, br in bill_r.items():
        lr = ledger_r.get(no)
        if lr is None:
            found.append(
                Discrepancy(
                    kind="refund_missing_in_ledger",
                    sub_mch_id=br.sub_mch_id,
                    out_trade_no=br.out_trade_no,
                    out_refund_no=no,
                    refund_id=br.refund_id,
                    bill=br.as_json(),
                    detail=f"refund of {br.refund_fee} {br.fee_type} in WeChat's bill but not recorded here",
                )
            )
        elif br.fee_type != lr.fee_type:
            found.append(
                Discrepancy(
                    kind="refund_currency_mismatch",
                    sub_mch_id=br.sub_mch_id,
                    out_trade_no=br.out_trade_no,
                    out_refund_no=no,
                    refund_id=br.refund_id,
                    bill=br.as_json(),
                    ledger=lr.as_json(),
                    detail=f"refund currency: bill {br.fee_type}, ledger {lr.fee_type}",
                )
            )
        elif br.refund_fee != lr.refund_fee:
            found.append(
                Discrepancy(
                    kind="refund_amount_mismatch",
                    sub_mch_id=br.sub_mch_id,
                    out_trade_no=br.out_trade_no,
                    out_refund_no=no,
                    refund_id=br.refund_id,
                    bill=br.as_json(),
                    ledger=lr.as_json(),
                    detail=f"refund amount: bill {br.refund_fee}, ledger {lr.refund_fee} ({br.fee_type} minor units)",
                )
            )
    for no, lr in ledger_r.items():
        if no not in bill_r:
            found.append(
                Discrepancy(
                    kind="refund_missing_in_bill",
                    sub_mch_id=lr.sub_mch_id,
                    out_trade_no=lr.out_trade_no,
                    out_refund_no=no,
                    refund_id=lr.refund_id,
                    ledger=lr.as_json(),
                    detail=f"refund of {lr.refund_fee} {lr.fee_type} recorded here but absent from WeChat's bill",
                )
            )
    found.sort(key=lambda d: d.sort_key)
    return found
