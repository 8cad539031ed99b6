"""The notification timeline: due notification attempts and refund completions run in time
order as the virtual clock moves; resends and tampered copies of notifications.
"""

from __future__ import annotations

import asyncio
import logging
import math
from contextvars import ContextVar
from datetime import datetime, timedelta

from minipay.protocol import (
    decode_xml,
    decrypt_req_info,
    encode_xml,
    encrypt_req_info,
    sign,
)
from minipay.sandbox._errors import ControlError
from minipay.sandbox._models import Notification
from minipay.sandbox._refunds import RefundRules

__all__ = ["MAX_ADVANCE", "PAYMENT_TAMPERS", "REFUND_TAMPERS", "Timeline"]

#: True inside a dispatch run (and in receivers called in-process from it): avoids a self-deadlock.
logger = logging.getLogger("minipay.sandbox")

_IN_DISPATCH: ContextVar[bool] = ContextVar("minipay_sandbox_in_dispatch", default=False)
PAYMENT_TAMPERS = ("bad_signature", "amount", "unsigned", "other_key", "md5_downgrade")
REFUND_TAMPERS = ("other_key", "garbage")
#: The longest single clock advance (ten years): NaN, infinity or 1e300 would overflow the clock.
MAX_ADVANCE = 10 * 366 * 86400


class Timeline(RefundRules):
    """The clock, the dispatcher and everything they make happen."""

    # ------------------------------------------------------------------ time and the dispatcher
    def hold_first_delivery(self, n: Notification) -> None:
        """Asynchronous delivery: the first attempt waits ``notify.first_delay`` real seconds
        (seeded draw), so the cashier's answer comes first, as it usually does live."""
        low, high = self.config.notify.first_delay
        delay = self.delays.uniform(low, high)
        self.held[n.id] = delay
        task = asyncio.get_running_loop().create_task(self._release(n.id, delay))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _release(self, notification_id: int, delay: float) -> None:
        _IN_DISPATCH.set(False)  # this task's own context: a payment made from a receiver still runs
        await asyncio.sleep(delay)
        if self.held.pop(notification_id, None) is None:
            return
        try:
            await self.run_due()
        except Exception:  # a background task: the attempt is recorded; never crash the loop
            logger.exception("asynchronous notification %s failed", notification_id)

    def _due(self, n: Notification) -> bool:
        return n.state == "pending" and n.next_due is not None and n.id not in self.held

    def _next_event(self) -> datetime | None:
        times = [n.next_due for n in self.notifications if self._due(n) and n.next_due is not None]
        times += [r.due_at for r in self.refunds.values() if r.status == "PROCESSING"]
        return min(times, default=None)

    async def run_due(self) -> None:
        """Make every attempt and refund completion that is due now (awaited: determinism)."""
        if _IN_DISPATCH.get():
            # Called back from a notification receiver (same context): the outer run finishes the work.
            return
        async with self._timeline():
            await self._run_due_locked()

    def _timeline(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def _run_due_locked(self) -> None:
        token = _IN_DISPATCH.set(True)
        try:
            while True:
                now = self.now()
                for refund in sorted(self.refunds.values(), key=lambda r: r.due_at):
                    if refund.status == "PROCESSING" and refund.due_at <= now:
                        self._complete_refund(refund)
                due = [n for n in self.notifications if self._due(n) and n.next_due is not None and n.next_due <= now]
                if not due:
                    return
                await asyncio.gather(*(self._deliver_scheduled(n) for n in due))
        finally:
            _IN_DISPATCH.reset(token)

    async def _deliver_scheduled(self, n: Notification) -> None:
        copies = 2 if n.mode in ("twice", "twice-concurrently") and n.deliveries == 0 else 1
        at = n.next_due or self.now()
        n.next_due = None
        attempts = await self.dispatcher.deliver(n, at, copies=copies, concurrent=n.mode == "twice-concurrently")
        n.deliveries += 1
        if any(a.verdict == "ack" for a in attempts):
            n.state = "delivered"
        elif any(a.verdict == "blocked" for a in attempts):
            n.state = "blocked"
        elif n.deliveries > len(self.config.notify.schedule):
            n.state = "exhausted"
        else:
            n.next_due = at + timedelta(seconds=self.config.notify.schedule[n.deliveries - 1])

    async def resend(self, notification_id: int, tamper: str | None = None) -> Notification:
        """One more delivery now. With ``tamper``, a forged copy instead: it never changes the
        notification's state (a receiver that acknowledges a forgery shows up as an ``ack``)."""
        n = self.notification(notification_id)
        body = self._tampered(n, tamper) if tamper is not None else None
        attempts = await self.dispatcher.deliver(
            n, self.now(), copies=1, concurrent=False, resend=True, body=body, tamper=tamper
        )
        forged = tamper is not None
        if (
            not forged
            and any(a.verdict == "ack" for a in attempts)
            and n.state in ("pending", "exhausted", "suppressed")
        ):
            n.state = "delivered"
            n.next_due = None
        return n

    def _tampered(self, n: Notification, tamper: str) -> bytes:
        inst = next((i for i in self.config.institutions if self.world.sub_merchant(i, n.sub_mch_id)), None)
        assert inst is not None
        fields: dict[str, str | int] = dict(decode_xml(n.body))
        other_key = "".join(self.ids.nonce()[:32])
        if n.kind == "payment":
            order = self.orders.get((n.sub_mch_id, n.out_trade_no))
            algorithm = order.sign_type if order is not None else str(fields.get("sign_type") or "MD5")
            if tamper == "bad_signature":
                fields["sign"] = ("0" * 31 + "1") if algorithm == "MD5" else ("0" * 63 + "1")
            elif tamper == "amount":
                fields["total_fee"] = int(fields["total_fee"]) + 1
            elif tamper == "unsigned":
                del fields["sign"]
            elif tamper == "other_key":
                fields["sign"] = sign({k: v for k, v in fields.items() if k != "sign"}, other_key, algorithm)
            elif tamper == "md5_downgrade":
                fields.pop("sign_type", None)
                fields["sign"] = sign({k: v for k, v in fields.items() if k != "sign"}, inst.key, "MD5")
            else:
                raise ControlError(f"payment tamper must be one of {', '.join(PAYMENT_TAMPERS)}")
            return encode_xml(fields)
        if tamper == "other_key":
            plaintext = decrypt_req_info(str(fields["req_info"]), inst.key)
            fields["req_info"] = encrypt_req_info(plaintext, other_key)
        elif tamper == "garbage":
            fields["req_info"] = "not base64 at all!"
        else:
            raise ControlError(f"refund tamper must be one of {', '.join(REFUND_TAMPERS)}")
        return encode_xml(fields)

    def notification(self, notification_id: int) -> Notification:
        for n in self.notifications:
            if n.id == notification_id:
                return n
        raise ControlError(f"no notification {notification_id}", 404)

    async def advance_by(self, seconds: object) -> None:
        """Move the clock ``seconds`` ahead (a finite number, 0 to :data:`MAX_ADVANCE`)."""
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or not 0 <= seconds <= MAX_ADVANCE
        ):
            raise ControlError(f"advance takes a number of seconds from 0 to {MAX_ADVANCE} (ten years)")
        await self.advance_to(self.now() + timedelta(seconds=seconds))

    async def advance_to(self, target: datetime) -> None:
        """Move the clock to ``target``, stopping at every due event on the way (in time order)."""
        if _IN_DISPATCH.get():
            # A notification receiver moving the clock: move it; the running dispatch continues.
            self.clock.set(target)
            return
        async with self._timeline():
            await self._run_due_locked()
            while True:
                nxt = self._next_event()
                if nxt is None or nxt > target:
                    break
                if nxt > self.now():
                    self.clock.set(nxt)
                await self._run_due_locked()
            if target > self.now() or not self.clock.realtime:
                self.clock.set(target)
            await self._run_due_locked()
