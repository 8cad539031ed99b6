"""``bench/service.py``'s verdicts: a target missed stays missed, and says so with its floor (out of
reach when the floor itself is below the target; the run itself is CI's smoke run, ``--quick``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import make_url

from tests.bench_scripts import load_bench

bench = load_bench("service")


def _rows(**rps: float) -> list[Any]:
    figures = {
        "floor GET": 30000.0,
        "floor POST": 30000.0,
        "FastAPI GET {id} + auth + read": 3000.0,
        "GET /v1/payments/{id}": 2000.0,
        "GET /healthz": 25000.0,
        "POST /v1/payments": 400.0,
        "notify (first-time)": 650.0,
        "notify (duplicate)": 2000.0,
    }
    figures.update({name.replace("_", " "): value for name, value in rps.items()})
    rows = []
    for case, value in figures.items():
        floor = None if case.startswith("floor") else "floor GET" if "GET" in case else "floor POST"
        rows.append(bench.Row(case, value, 5.0, 10.0, 0, 1000, floor, figures[floor] if floor else None))
    return rows


def _verdict(rows: list[Any], db: str, replicas: int, starts: str) -> tuple[str, bool]:
    (found,) = [check for check in bench.targets(rows, db, replicas) if check[0].startswith(starts)]
    return found


def test_a_first_time_miss_names_the_most_complete_floor_when_that_floor_is_below_the_target() -> None:
    rows = _rows()
    rows.append(bench.Row("FastAPI POST + notify's SQL", 820.0, 5, 10, 0, 1000, "floor POST", 30000.0))
    rows.append(bench.Row("FastAPI POST + notify's parse + SQL", 770.0, 5, 10, 0, 1000, "floor POST", 30000.0))
    text, met = _verdict(rows, "postgres", 2, "first-time")
    assert not met
    assert "out of reach" in text
    assert "parse, signature check and statements and nothing else reaches 770/s" in text


def test_a_first_time_miss_above_its_floor_is_only_a_miss() -> None:
    rows = _rows()
    rows.append(bench.Row("FastAPI POST + notify's parse + SQL", 900.0, 5, 10, 0, 1000, "floor POST", 30000.0))
    text, met = _verdict(rows, "postgres", 2, "first-time")
    assert not met
    assert "out of reach" not in text
    assert _verdict(rows, "sqlite", 1, "first-time")[1]  # 650/s against 500/s


def _create_floor(rps: float, p99_ms: float) -> Any:
    return bench.Row("floor POST + creation's SQL + unifiedorder", rps, 5.0, p99_ms, 0, 1000, "floor POST", 30000.0)


def test_a_payment_creation_miss_below_its_floor_is_out_of_reach_and_names_the_floor() -> None:
    rows = [*_rows(**{"POST /v1/payments": 220.0}), _create_floor(250.0, 140.0)]
    for row in rows:
        if row.case == "POST /v1/payments":
            row.p99_ms = 130.0
    text, met = _verdict(rows, "sqlite", 1, "POST /v1/payments >= 300/s")
    assert not met
    assert "out of reach" in text
    assert "unified order at the sandbox (as the service runs" in text
    assert "and nothing else reaches 250/s" in text
    text, met = _verdict(rows, "sqlite", 1, "POST /v1/payments p99")
    assert not met
    assert "out of reach" in text
    assert "has a p99 of 140.0 ms" in text


def test_a_payment_creation_miss_above_its_floor_is_only_a_miss() -> None:
    rows = [*_rows(**{"POST /v1/payments": 220.0}), _create_floor(400.0, 60.0)]
    for row in rows:
        if row.case == "POST /v1/payments":
            row.p99_ms = 130.0
    for starts in ("POST /v1/payments >= 300/s", "POST /v1/payments p99"):
        text, met = _verdict(rows, "postgres", 2, starts)
        assert not met
        assert "out of reach" not in text


def test_a_payment_creation_target_met_says_nothing_of_a_floor_below_it() -> None:
    rows = [*_rows(), _create_floor(250.0, 140.0)]  # the service: 400/s, p99 10 ms
    for starts in ("POST /v1/payments >= 300/s", "POST /v1/payments p99"):
        text, met = _verdict(rows, "postgres", 2, starts)
        assert met
        assert "floor" not in text
        assert "out of reach" not in text


def test_a_get_ratio_miss_shows_the_lookup_floor_and_says_out_of_reach_only_below_the_target() -> None:
    rows = _rows()
    rows.append(bench.Row("floor GET + lookup", 4500.0, 5, 10, 0, 1000, "floor GET", 30000.0))
    text, met = _verdict(rows, "postgres", 1, "GET /v1/payments/{id} >= 0.30x")
    assert not met
    assert "out of reach on this machine" in text
    assert "same keyed lookup and nothing else reaches 0.15x, this GET 0.44x of it" in text
    rows[-1] = bench.Row("floor GET + lookup", 9600.0, 5, 10, 0, 1000, "floor GET", 30000.0)
    text, met = _verdict(rows, "sqlite", 1, "GET /v1/payments/{id} >= 0.30x")
    assert not met
    assert "out of reach" not in text
    assert "reaches 0.32x, this GET 0.21x of it" in text


def test_a_get_ratio_met_is_only_met() -> None:
    rows = _rows(**{"GET /v1/payments/{id}": 9100.0})
    rows.append(bench.Row("floor GET + lookup", 9600.0, 5, 10, 0, 1000, "floor GET", 30000.0))
    text, met = _verdict(rows, "sqlite", 1, "GET /v1/payments/{id} >= 0.30x")
    assert met
    assert text == "GET /v1/payments/{id} >= 0.30x floor GET (0.30x)"


def test_floors_measured_far_apart_are_reported_and_close_ones_are_not() -> None:
    rows = _rows()
    rows.append(bench.Row("floor GET (again)", 20000.0, 5, 10, 0, 1000))
    rows.append(bench.Row("floor POST (again)", 28000.0, 5, 10, 0, 1000))
    (line,) = bench.floor_drift(rows)
    assert "floor GET measured 30,000/s, then 20,000/s (33% apart)" in line
    assert "run it again" in line
    rows[-2] = bench.Row("floor GET (again)", 27000.0, 5, 10, 0, 1000)
    assert bench.floor_drift(rows) == []


def test_a_first_time_target_met_says_nothing_of_a_floor_below_it() -> None:
    rows = _rows(**{"notify (first-time)": 593.0})
    rows.append(bench.Row("FastAPI POST + notify's parse + SQL", 497.0, 5, 10, 0, 1000, "floor POST", 30000.0))
    assert _verdict(rows, "sqlite", 1, "first-time") == ("first-time notifications >= 500/s (593/s)", True)


def _proc(tmp_path: Any, *, enabled: str, ours: str, server: str | None) -> Any:
    """A stand-in for /proc: the autogroup switch, this process's group and the server's (pid 77)."""
    (tmp_path / "sys/kernel").mkdir(parents=True)
    (tmp_path / "sys/kernel/sched_autogroup_enabled").write_text(enabled + "\n")
    (tmp_path / "self").mkdir()
    (tmp_path / "self/autogroup").write_text(f"{ours} nice 0\n")
    if server is not None:
        (tmp_path / "77").mkdir()
        (tmp_path / "77/autogroup").write_text(f"{server} nice 0\n")
    return tmp_path


def test_postgresql_in_another_autogroup_is_reported(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(bench, "_pg", lambda url, sql: 77)  # the checkpointer's pid
    proc = _proc(tmp_path, enabled="1", ours="/autogroup-85", server="/autogroup-7")
    assert bench.autogroup("postgresql+asyncpg://x", proc) == {"enabled": True, "database_apart": True}


def test_postgresql_in_this_runs_autogroup_or_autogroup_off_is_not(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(bench, "_pg", lambda url, sql: 77)
    same = _proc(tmp_path / "same", enabled="1", ours="/autogroup-85", server="/autogroup-85")
    off = _proc(tmp_path / "off", enabled="0", ours="/autogroup-85", server="/autogroup-7")
    assert bench.autogroup("postgresql+asyncpg://x", same) == {"enabled": True, "database_apart": False}
    assert bench.autogroup("postgresql+asyncpg://x", off) == {"enabled": False, "database_apart": None}


def test_a_server_elsewhere_leaves_the_grouping_unknown(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(bench, "_pg", lambda url, sql: 77)  # no such process on this machine
    proc = _proc(tmp_path, enabled="1", ours="/autogroup-85", server=None)
    assert bench.autogroup("postgresql+asyncpg://x", proc) == {"enabled": True, "database_apart": None}


def test_the_runs_database_is_on_the_same_server_with_the_same_options() -> None:
    made = bench.database_url("postgresql+asyncpg://postgres:p%40ss@/postgres?host=/run/postgresql", "minipay_bench_1")
    url = make_url(made)
    assert (url.username, url.password, url.database) == ("postgres", "p@ss", "minipay_bench_1")
    assert url.query == {"host": "/run/postgresql"}
    tcp = bench.database_url("postgresql+asyncpg://postgres@127.0.0.1:5432/postgres", "x")
    assert tcp == "postgresql+asyncpg://postgres@127.0.0.1:5432/x"
