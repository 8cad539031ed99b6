"""The console's overview, reconciliation and webhooks pages over the whole system (sandbox, service,
worker): the day's bill run after the worker reconciled it, the charts, the deliveries."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.e2e.conftest import open_stack
from tests.e2e.stack import START

pytestmark = pytest.mark.anyio

SUB1 = "1900000110"
DAY = START.date()
ORIGIN = {"Origin": "http://service"}


async def test_overview_reconciliation_and_webhooks_pages(tmp_path: Path) -> None:
    async with open_stack("sqlite", tmp_path) as stack:
        first = await stack.create_payment(1000, description="<i>tea</i>")
        await stack.pay(first)
        await stack.advance(60)
        last = await stack.create_payment(2500)
        await stack.pay(last)
        await stack.set_clock(START + timedelta(days=1, minutes=5))
        await stack.worker.run_until_idle()

        http = stack.service
        login = await http.post("/console/login", data={"api_key": stack.keys[SUB1]}, headers=ORIGIN)
        assert login.status_code == 303

        overview = await http.get("/console/overview")
        assert overview.status_code == 200
        assert "<svg" in overview.text
        assert "Payments per day, last 30 days" in overview.text

        page = await http.get("/console/reconciliation", params={"date": DAY.isoformat()})
        assert page.status_code == 200
        assert f"Bill runs of {DAY.isoformat()}" in page.text
        assert '<span class="badge ok">ok</span>' in page.text

        hooks = await http.get("/console/webhooks")
        assert hooks.status_code == 200
        assert "Recent deliveries" in hooks.text
