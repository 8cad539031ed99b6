"""``bench/protocol.py`` keeps running: a tiny run, no timing asserted (speed is the bench's job)."""

from __future__ import annotations

import logging
import re

import pytest

from tests.bench_scripts import load_bench


def test_the_benchmark_runs_every_case_and_prints_the_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("protocol")
    status = bench.main(["--rounds", "1", "--number", "3"])
    out = capsys.readouterr().out
    assert status in (0, 1)  # 1 = a target missed, which a 3-operation run says nothing about
    for case in (
        "(a) unified order: build + sign + encode",
        "(b) notification: decode + verify + typed model",
        "(c) sign + encode a unified-order dict",
    ):
        row = next(line for line in out.splitlines() if line.startswith(case))
        assert re.search(r"[0-9.]+ us +[0-9.]+ us +[0-9.]+x +[0-9.]+x  (yes|NO)$", row), row
    floor = next(line for line in out.splitlines() if line.startswith("(c) floor"))
    assert re.search(r": [0-9.]+ us; minipay [0-9.]+ us in the same rounds \([0-9.]+x the floor\)$", floor), floor


def test_the_benchmark_gives_logging_back_as_it_found_it(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("protocol")
    logging.disable(logging.DEBUG)
    try:
        bench.main(["--rounds", "1", "--number", "1"])
        assert logging.root.manager.disable == logging.DEBUG
    finally:
        logging.disable(logging.NOTSET)
    bench.main(["--rounds", "1", "--number", "1"])
    assert logging.root.manager.disable == logging.NOTSET


def test_both_sides_of_the_benchmark_do_the_same_work() -> None:
    bench = load_bench("protocol")
    client = bench._wechatpy_client()
    key = bench.mp.ApiKey(bench.KEY)
    bench._check_equivalence(client, key)  # (c) included: the same fields and signature on both sides
    assert bench.mp.decode_xml(bench.minipay_sign_encode())["total_fee"] == str(bench.ORDER["total_fee"])
    with pytest.raises(bench.mp.SignatureError):
        bench.mp.parse_payment_notification(bench.NOTIFICATION.replace(b"1000", b"1001"), key)
