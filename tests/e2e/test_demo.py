"""``minipay demo`` runs in CI: the whole flow, every check, exit 0; a broken flow exits 1 with a message."""

from __future__ import annotations

import asyncio
import io
import os
import sys

import pytest
from rich.console import Console
from typer.testing import CliRunner

from minipay.cli import app
from minipay.demo import run_demo


async def _minipay_demo(*args: str) -> tuple[int | None, str]:
    """``minipay demo`` as a user runs it: a real process; its exit status and its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPAY_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from minipay.cli import main; main()",
        "demo",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, output.decode()


@pytest.mark.slow
@pytest.mark.anyio
async def test_minipay_demo_exits_0_after_the_whole_flow() -> None:
    status, text = await _minipay_demo()
    assert status == 0, text
    for milestone in (
        "the service resolved alice's openid",
        "the notification was delivered and acknowledged",
        "the receiver got payment.succeeded and verified its Minipay-Signature",
        "WeChat says SUCCESS for the same amount",
        "the refund notification marked it succeeded",
        "recovered by the active query",
        "closeorder answered SUCCESS at WeChat",
        "zero discrepancies",
        "checks held",
    ):
        assert milestone in text, milestone
    assert "DEMO FAILED" not in text


@pytest.mark.anyio
async def test_the_demo_fails_with_a_clear_message_when_wechat_keeps_failing() -> None:
    out = io.StringIO()
    faults = [{"endpoint": "unifiedorder", "fault": "http_500", "times": 50}]
    ok = await run_demo(console=Console(file=out, width=200), faults=faults)
    text = out.getvalue()
    assert ok is False
    assert "DEMO FAILED:" in text
    assert "checks held" not in text


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_failed_check_makes_the_demo_process_exit_1() -> None:
    status, text = await _minipay_demo("--fault", "unifiedorder:http_500:50")
    assert status == 1, text
    assert "DEMO FAILED: payment created" in text
    assert "checks held" not in text


@pytest.mark.slow
@pytest.mark.anyio
async def test_an_error_in_the_middle_of_the_flow_exits_1_with_the_step_not_a_traceback() -> None:
    # Every order query answers SYSTEMERROR: step 6 asks WeChat through the SDK, which raises.
    status, text = await _minipay_demo("--fault", "orderquery:SYSTEMERROR:50")
    assert status == 1, text
    assert "DEMO FAILED: step 6 (Query) raised WeChatSystemError" in text
    assert "Traceback" not in text
    assert "checks held" not in text


def test_a_malformed_fault_option_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["demo", "--fault", "orderquery"])
    assert result.exit_code == 2
    assert "ENDPOINT:FAULT[:TIMES]" in result.output
