from __future__ import annotations

import pytest

from tests.sandbox.conftest import Sandbox


@pytest.mark.anyio
async def test_order_pay_notify_roundtrip(sandbox: Sandbox) -> None:
    answer = await sandbox.paid_order()
    assert answer["return_code"] == "SUCCESS"
    notes = await sandbox.notifications("ORDER0001")
    assert notes[0]["state"] == "delivered"
    q = await sandbox.call("/pay/orderquery", {"sub_mch_id": "1900000110", "out_trade_no": "ORDER0001"})
    assert q["trade_state"] == "SUCCESS"
    assert q["cash_fee"] == "920"
