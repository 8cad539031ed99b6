"""The one error the SDK adds to the protocol's tree: a response signature that does not verify.

The protocol's :class:`~minipay.protocol.SignatureError` knows nothing of the call it answered. The
SDK re-raises it as :class:`ResponseSignatureError` (still a ``SignatureError``, never a business
error) carrying what every operation error carries: ``operation``, the merchant's ``ids``,
``err_code``/``err_code_des`` (empty: an unverified answer is not believed) and the two flags.

``outcome_unknown`` is true for the calls that change state (``orders.create``, ``orders.close``,
``refunds.create``): the request reached *something* that answered, and a damaged or tampered copy
of a real success looks exactly like this, so the caller must query before concluding the call
failed (a refund recorded as "failed" while WeChat paid it out invites a second refund).
"""

from __future__ import annotations

from collections.abc import Mapping

from minipay.protocol import SignatureError

__all__ = ["ResponseSignatureError"]


class ResponseSignatureError(SignatureError):
    """A WeChat answer whose signature is missing, wrong or refused by the pinned policy."""

    retryable = False

    def __init__(
        self, message: str, *, operation: str, ids: Mapping[str, str] | None = None, outcome_unknown: bool
    ) -> None:
        self.operation = operation
        self.ids: dict[str, str] = dict(ids or {})
        self.err_code = ""
        self.err_code_des = ""
        self.outcome_unknown = outcome_unknown
        context = " ".join(f"{k}={v}" for k, v in sorted(self.ids.items()))
        super().__init__(message + (f" ({context})" if context else ""))

    @property
    def mch_id(self) -> str | None:
        return self.ids.get("mch_id")

    @property
    def sub_mch_id(self) -> str | None:
        return self.ids.get("sub_mch_id")

    @property
    def out_trade_no(self) -> str | None:
        return self.ids.get("out_trade_no")

    @property
    def out_refund_no(self) -> str | None:
        return self.ids.get("out_refund_no")
