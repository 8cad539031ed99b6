"""Load benchmark of the payment service, with the framework floor measured in the same run.

    uv run python bench/service.py [--db sqlite|postgres] [--replicas N] [--duration S]
                                   [--connections 16] [--json FILE] [--quick]

Starts, on loopback ports of its own: a standalone sandbox (``minipay sandbox``), the service from a
generated configuration (``minipay serve -c <config> --no-worker --no-access-log``; with
``--replicas N``: ``uvicorn --factory minipay.server.asgi:app_from_env --workers N --http
minipay.server.asgi:HttpProtocol``, the documented way to run replicas, on one port), and a bare
Starlette app (``bench/floor_app.py``) under the same uvicorn (uvloop + httptools, access log off,
same number of processes). Then it measures:

- ``floor GET`` / ``floor POST``: the bare app (the floor) under uvicorn's own httptools protocol,
  measured first and again after the cases compared with it (``floor GET (again)`` after the reads,
  ``floor POST (again)`` last): each ratio is against the mean of the two, and the run says so when
  they are more than 15 % apart (a virtual machine's speed moves by that much over minutes);
- ``floor GET, one write``: the same bare app under the service's HTTP protocol
  (``minipay.server.asgi:HttpProtocol``: uvicorn's httptools protocol sending a response's head and
  body in one write instead of two): what that protocol is worth on a response that costs nothing
  else; ``floor GET + lookup, one write``: the same for the floor app running the service's keyed
  lookup (see below). Information: the targets stay against the floor under uvicorn's own protocol,
  as the issue that set them defines it, and the run also prints each read against these
  like-for-like floors;
- ``FastAPI GET`` / ``FastAPI GET {id} + auth``: a bare FastAPI route, and one of the shape of
  ``GET /v1/payments/{id}`` (path parameter, query flag, bearer header read by a dependency) doing
  none of its work, under the same uvicorn: the part of the gap to the floor that is the framework's
  own (information: the targets stay against the Starlette floor);
- ``FastAPI GET {id} + auth + read``: that shape plus the one SQL read the service's GET makes
  (the payment's row by id, the service's engine and driver, same database): the floor of the work
  left in ``GET /v1/payments/{id}`` once the framework and the database are counted;
- ``floor GET + lookup``: the Starlette floor app running only the keyed lookup the service's GET
  makes (the payment by id, the service's unit of work of lookups, same database): the floor of the
  work left in ``GET /v1/payments/{id}`` on the bare framework;
- ``FastAPI POST + notify's SQL``: a FastAPI POST route that reads its body and runs the statements of
  a first-time notification (through the service's repositories, on the payments just created):
  the floor of the work left in a first-time notification once the framework and the database are
  counted;
- ``floor POST + creation's SQL + unifiedorder``: the Starlette floor app, run as the service is
  (its HTTP protocol, its start-up heap frozen), doing what no payment creation can skip through the
  service's own repositories and WeChat gateway: the payment and its event inserted and committed, the
  unified order at the same sandbox, the ``prepay_id`` saved and committed (warmed up as the service
  is, measured after the service's ``POST /v1/payments``): the floor of the work left in a payment's
  creation once the framework, the database and the WeChat round trip are counted;
- ``GET /healthz``;
- ``POST /v1/payments``: creates payments, each one a ``unifiedorder`` round trip to the sandbox;
- ``GET /v1/payments/{id}``: reads the payments just created (in turn);
- ``notify (first-time)``: one validly signed payment notification per pending payment (signed
  with the institution key, as WeChat would), each sent once; the run ends when all are answered;
- ``notify (duplicate)``: the same notifications again (already applied).

Load generator: ``wrk`` (Debian: ``apt-get install wrk``) when it is on PATH, with Lua scripts for
the POST bodies and the distinct notifications; otherwise a small built-in asyncio HTTP/1.1
generator (keep-alive connections, one request in flight each). The load generator runs on the same
machine: what counts are the ratios to the floor measured in the same run. A response counts as an
error when it is not 2xx (and, for notifications, not the SUCCESS reply), and so does every socket
error or timeout.

Prints a table, the ratios and the targets (issue 9); ``--json FILE`` writes the figures. The exit
code is 1 when a target is missed, except with ``--quick`` (a smoke run of a few seconds: CI).
PostgreSQL: a fresh database per run (``--pg-url`` names the server), dropped afterwards.

The kernel's scheduler matters when PostgreSQL shares the machine: with autogroup on
(``kernel.sched_autogroup_enabled = 1``, the default of many kernels) the server, started in a session
of its own, is one scheduling group and this run's processes another, and the CPU is shared between
the groups. On a 2-CPU machine under this load that stalled every PostgreSQL connection at times for
up to a second (the backends woken, runnable and not run), whatever the service did. The run says
so when it finds the server in another autogroup, and records it in the JSON (``autogroup``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx2 as httpx

from minipay.protocol import encode_xml, sign
from minipay.sandbox import SandboxConfig
from minipay.serve import free_ports

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
WRK_HOWTO = "wrk not found: using the built-in generator (Debian/Ubuntu: apt-get install wrk)"


# -- the processes ---------------------------------------------------------------------------------------


def _exe(name: str) -> str:
    local = BIN / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def _quiet_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPAY_")}
    env.update(extra)
    return env


@dataclass
class Stack:
    sandbox_url: str
    service_url: str
    floor_url: str
    fastapi_url: str
    one_write_url: str
    orders_url: str
    admin_key: str
    sub_key: str
    sub: dict[str, str]
    institution: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    database_url: str = ""

    def analyze(self) -> None:
        """PostgreSQL: update the planner's statistics after the writes of the set-up, as autovacuum
        does within a minute or so in production (it may be off on a test server: then the tables stay
        unanalysed, and a prepared lookup's generic plan can take an index that reads far more rows)."""
        if self.database_url.startswith("postgresql"):
            _pg(self.database_url, "ANALYZE")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before answering {url}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not answer {url} within {timeout:.0f} s")


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_config(path: Path, *, database_url: str, service_url: str, sandbox_url: str, keys: dict[str, str]) -> None:
    """A service configuration for the sandbox's built-in world (its institutions and sub-merchants)."""
    world = SandboxConfig.default()
    lines = [
        f"database_url = {_toml_str(database_url)}",
        f"public_base_url = {_toml_str(service_url)}",
        f"admin_api_keys = [{_toml_str(keys['admin'])}]",
        "allow_local_notify_url = true",  # the sandbox calls back on loopback
        "run_migrations = false",  # `minipay db upgrade` ran once before the processes start
    ]
    for index, inst in enumerate(world.institutions):
        name = f"inst{index}"
        lines += [
            "",
            "[[institutions]]",
            f"name = {_toml_str(name)}",
            f"appid = {_toml_str(inst.appid)}",
            f"mch_id = {_toml_str(inst.mch_id)}",
            f"api_key = {_toml_str(inst.api_key)}",
            f"base_url = {_toml_str(sandbox_url)}",
            f"login_base_url = {_toml_str(sandbox_url)}",
        ]
        for sub in inst.sub_merchants:
            lines += [
                "",
                "[[sub_merchants]]",
                f"institution = {_toml_str(name)}",
                f"sub_mch_id = {_toml_str(sub.sub_mch_id)}",
                f"sub_appid = {_toml_str(sub.sub_appid)}",
                f"app_secret = {_toml_str(sub.app_secret)}",
                f"currency = {_toml_str(sub.settlement_currency)}",
                f"api_keys = [{_toml_str(keys[sub.sub_mch_id])}]",
            ]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


#: The HTTP/1.1 protocol the service runs (``minipay serve``'s, and ``--http`` of its replicas):
#: uvicorn's httptools protocol sending a response's head and body in one write.
HTTP_PROTOCOL = "minipay.server.asgi:HttpProtocol"


def start_stack(work: Path, *, database_url: str, replicas: int) -> Stack:
    sandbox_port, service_port, floor_port, fastapi_port, one_write_port, orders_port = free_ports(6)
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    service_url = f"http://127.0.0.1:{service_port}"
    floor_url = f"http://127.0.0.1:{floor_port}"
    world = SandboxConfig.default()
    inst = world.institutions[0]
    sub = inst.sub_merchants[0]
    keys = {"admin": "adm_" + secrets.token_hex(20)}
    for i in world.institutions:
        for s in i.sub_merchants:
            keys[s.sub_mch_id] = "sk_" + secrets.token_hex(20)
    config = work / "service.toml"
    write_config(config, database_url=database_url, service_url=service_url, sandbox_url=sandbox_url, keys=keys)
    log = (work / "processes.log").open("ab")
    env = _quiet_env()

    subprocess.run([_exe("minipay"), "db", "upgrade", "-c", str(config)], check=True, env=env, stdout=log, stderr=log)
    stack = Stack(
        sandbox_url=sandbox_url,
        service_url=service_url,
        floor_url=floor_url,
        fastapi_url=f"http://127.0.0.1:{fastapi_port}",
        one_write_url=f"http://127.0.0.1:{one_write_port}",
        orders_url=f"http://127.0.0.1:{orders_port}",
        admin_key=keys["admin"],
        sub_key=keys[sub.sub_mch_id],
        sub={"sub_mch_id": sub.sub_mch_id, "sub_appid": sub.sub_appid, "currency": sub.settlement_currency},
        institution={"appid": inst.appid, "mch_id": inst.mch_id, "api_key": inst.api_key},
        database_url=database_url,
    )
    try:
        sandbox = subprocess.Popen(
            [_exe("minipay"), "sandbox", "--port", str(sandbox_port)], env=env, stdout=log, stderr=log
        )
        stack.procs.append(sandbox)
        uvicorn_common = ["--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]
        if replicas == 1:
            service_cmd = [
                _exe("minipay"),
                "serve",
                "-c",
                str(config),
                "--port",
                str(service_port),
                "--no-worker",
                "--no-access-log",
            ]
            floor_cmd = [_exe("uvicorn"), "floor_app:app", "--app-dir", str(HERE), "--port", str(floor_port)]
        else:
            service_cmd = [
                _exe("uvicorn"),
                "--factory",
                "minipay.server.asgi:app_from_env",
                "--port",
                str(service_port),
                "--workers",
                str(replicas),
                "--http",
                HTTP_PROTOCOL,
                *uvicorn_common,
            ]
            floor_cmd = [
                _exe("uvicorn"),
                "floor_app:app",
                "--app-dir",
                str(HERE),
                "--port",
                str(floor_port),
                "--workers",
                str(replicas),
            ]
        service = subprocess.Popen(service_cmd, env=_quiet_env(MINIPAY_CONFIG=str(config)), stdout=log, stderr=log)
        stack.procs.append(service)

        def floor_process(app: str, port: int, *options: str, **env: str) -> subprocess.Popen[bytes]:
            """A floor app (``floor_app:<app>``) on ``port``, started as the floor is (``options``: more)."""
            cmd = [arg.replace("floor_app:app", f"floor_app:{app}") for arg in floor_cmd]
            cmd[cmd.index(str(floor_port))] = str(port)
            proc = subprocess.Popen([*cmd, *options, *uvicorn_common], env=_quiet_env(**env), stdout=log, stderr=log)
            stack.procs.append(proc)
            return proc

        floor = floor_process("app", floor_port, MINIPAY_BENCH_DATABASE_URL=database_url)
        fastapi = floor_process(
            "fastapi_app", fastapi_port, MINIPAY_BENCH_DATABASE_URL=database_url, MINIPAY_BENCH_API_KEY=inst.api_key
        )
        # The floor app under the service's HTTP protocol (information: see the module docstring).
        one_write = floor_process(
            "app", one_write_port, "--http", HTTP_PROTOCOL, MINIPAY_BENCH_DATABASE_URL=database_url
        )
        _wait_http(f"{sandbox_url}/sandbox/", sandbox, "the sandbox")
        _wait_http(f"{service_url}/healthz", service, "the service")
        _wait_http(f"{floor_url}/get", floor, "the floor app")
        _wait_http(f"{stack.fastapi_url}/get", fastapi, "the FastAPI floor app")
        # The floor app that creates payments (POST /orders, through the service's own gateway to the
        # same sandbox), run as the service is: its HTTP protocol, its start-up heap frozen.
        orders = floor_process(
            "app",
            orders_port,
            "--http",
            HTTP_PROTOCOL,
            MINIPAY_BENCH_DATABASE_URL=database_url,
            MINIPAY_CONFIG=str(config),
        )
        _wait_http(f"{stack.one_write_url}/get", one_write, "the floor app under the service's HTTP protocol")
        _wait_http(f"{stack.orders_url}/get", orders, "the floor app that creates payments")
    except BaseException:
        stack.stop()
        raise
    return stack


# -- load generators -------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Result:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


class Case:
    """What one measurement sends: a cycle of requests, or (``once``) each request exactly once."""

    def __init__(
        self, name: str, base_url: str, requests: Sequence[Request], *, once: bool = False, xml_ok: bool = False
    ):
        self.name, self.base_url, self.requests, self.once, self.xml_ok = name, base_url, list(requests), once, xml_ok


def _lua_quote(value: str | bytes) -> str:
    text = value.decode() if isinstance(value, bytes) else value
    return json.dumps(text)  # JSON string escapes are valid Lua escapes for this ASCII content


def _wrk_script(case: Case, threads: int, flag: Path) -> str:
    # Requests are split between wrk's threads (thread i sends items i, i + threads, ...).
    items = ",\n".join(
        "{" + f"{_lua_quote(r.method)}, {_lua_quote(r.path)}, {_lua_quote(r.body)}" + "}" for r in case.requests
    )
    headers = case.requests[0].headers
    header_lines = "\n".join(f"headers[{_lua_quote(k)}] = {_lua_quote(v)}" for k, v in headers.items())
    return f"""
local items = {{
{items}
}}
local threads = {{}}
local nthreads = {threads}
local once = {"true" if case.once else "false"}
local xml_ok = {"true" if case.xml_ok else "false"}
headers = {{}}
{header_lines}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  mine = {{}}
  for i = tid + 1, #items, nthreads do table.insert(mine, items[i]) end
  if #mine == 0 then mine = {{items[1]}} end
  nxt = 0
  answered = 0
  first = 0
  failures = 0
  flagged = false
end

function request()
  nxt = nxt + 1
  local item = mine[((nxt - 1) % #mine) + 1]
  return wrk.format(item[1], item[2], headers, item[3] ~= "" and item[3] or nil)
end

function response(status, hdrs, body)
  answered = answered + 1
  if once and answered <= #mine then first = first + 1 end
  if status < 200 or status > 299 or (xml_ok and not string.find(body, "SUCCESS", 1, true)) then
    failures = failures + 1
  end
  if once and not flagged and answered >= #mine then
    flagged = true
    local f = io.open("{flag}", "a")
    f:write("done\\n")
    f:close()
  end
end

function done(summary, latency, requests)
  local failed, firsts = 0, 0
  for _, t in ipairs(threads) do
    failed = failed + t:get("failures")
    firsts = firsts + t:get("first")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests": %d, "first": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"socket_errors": %d, "failed": %d}}\\n',
    summary.requests, firsts, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, failed + e.status))
end
"""


def run_wrk(case: Case, *, duration: float, connections: int, work: Path) -> Result:
    threads = 2
    flag = work / f"{re.sub(r'[^a-z0-9]+', '_', case.name.lower())}.done"
    flag.unlink(missing_ok=True)
    script = work / "case.lua"
    script.write_text(_wrk_script(case, threads, flag))
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        case.base_url,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if case.once:  # stop wrk as soon as every thread has had each of its requests answered once
        while proc.poll() is None:
            if flag.exists() and flag.read_text().count("done") >= threads:
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.01)
    out, _ = proc.communicate()
    text = out.decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise SystemExit(f"wrk failed for {case.name}:\n{text[-2000:]}")
    data = json.loads(line.removeprefix("BENCHJSON "))
    seconds = data["duration_us"] / 1e6
    return Result(
        requests=data["first"] if case.once else data["requests"],
        seconds=seconds,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=data["socket_errors"] + data["failed"],
    )


async def _builtin(case: Case, *, duration: float, connections: int) -> Result:
    from urllib.parse import urlsplit

    parts = urlsplit(case.base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    raw = []
    for r in case.requests:
        head = [f"{r.method} {r.path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(r.body)}"]
        head += [f"{k}: {v}" for k, v in r.headers.items()]
        raw.append(("\r\n".join(head) + "\r\n\r\n").encode() + r.body)
    source: Iterator[bytes] = iter(raw) if case.once else _cycle(raw)
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for payload in source:
                if time.monotonic() >= deadline:
                    return
                start = time.perf_counter()
                writer.write(payload)
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
                    status = int(head.split(b" ", 2)[1])
                    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
                    body = await reader.readexactly(length)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, AttributeError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                latencies.append(time.perf_counter() - start)
                if not 200 <= status <= 299 or (case.xml_ok and b"SUCCESS" not in body):
                    errors += 1
        finally:
            writer.close()

    began = time.monotonic()
    await asyncio.gather(*(connection() for _ in range(connections)))
    seconds = time.monotonic() - began
    latencies.sort()
    pct = (
        (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000) if latencies else (lambda q: 0.0)
    )
    return Result(requests=len(latencies), seconds=seconds, p50_ms=pct(0.50), p99_ms=pct(0.99), errors=errors)


def _cycle(items: list[bytes]) -> Iterator[bytes]:
    while True:
        yield from items


def measure(case: Case, *, generator: str, duration: float, connections: int, work: Path) -> Result:
    if generator == "wrk":
        return run_wrk(case, duration=duration, connections=connections, work=work)
    return asyncio.run(_builtin(case, duration=duration, connections=connections))


# -- the scenario ------------------------------------------------------------------------------------------

BEIJING = timezone(timedelta(hours=8))


def notification(stack: Stack, payment: dict[str, Any], n: int) -> bytes:
    """The payment notification WeChat would send for ``payment`` (spec 7), signed with the institution key."""
    fields = {
        "return_code": "SUCCESS",
        "return_msg": "OK",
        "appid": stack.institution["appid"],
        "mch_id": stack.institution["mch_id"],
        "sub_appid": payment["sub_appid"],
        "sub_mch_id": payment["sub_mch_id"],
        "nonce_str": secrets.token_hex(16),
        "result_code": "SUCCESS",
        "openid": "oBench" + payment["openid"][-20:],
        "sub_openid": payment["openid"],
        "is_subscribe": "N",
        "trade_type": "JSAPI",
        "bank_type": "OTHERS",
        "total_fee": str(payment["amount"]),
        "fee_type": payment["currency"],
        "cash_fee": str(payment["amount"]),
        "cash_fee_type": payment["currency"],
        "transaction_id": f"42000{n:023d}",
        "out_trade_no": payment["out_trade_no"],
        "time_end": datetime.now(BEIJING).strftime("%Y%m%d%H%M%S"),
    }
    fields["sign"] = sign(fields, stack.institution["api_key"])
    return encode_xml(fields)


def payer_openid(stack: Stack) -> str:
    """A payer of the sub-merchant's mini program: wx.login at the sandbox, then the service's session step."""
    login = httpx.post(
        f"{stack.sandbox_url}/sandbox/login", json={"appid": stack.sub["sub_appid"], "user": "bench"}, timeout=10
    ).raise_for_status()
    session = httpx.post(
        f"{stack.service_url}/v1/sessions",
        json={"code": login.json()["code"]},
        headers={"Authorization": f"Bearer {stack.sub_key}"},
        timeout=10,
    ).raise_for_status()
    openid: str = session.json()["openid"]
    return openid


def pending_payments(stack: Stack, created_ids: set[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    with httpx.Client(base_url=stack.service_url, headers={"Authorization": f"Bearer {stack.admin_key}"}) as http:
        while True:
            params: dict[str, Any] = {"status": "pending", "limit": 100}
            if cursor:
                params["cursor"] = cursor
            page = http.get("/v1/payments", params=params, timeout=30).raise_for_status().json()
            out.extend(p for p in page["data"] if not created_ids or p["id"] in created_ids)
            cursor = page.get("next_cursor")
            if not page.get("has_more") or not cursor:
                return out


def top_up(stack: Stack, create: Request, at_least: int) -> None:
    """Create more pending payments (unmeasured) until there are ``at_least``."""

    async def go() -> None:
        async with httpx.AsyncClient(base_url=stack.service_url, timeout=30) as http:
            have = len(pending_payments(stack, set()))
            sem = asyncio.Semaphore(16)

            async def one() -> None:
                async with sem:
                    r = await http.post(create.path, content=create.body, headers=create.headers)
                    r.raise_for_status()

            await asyncio.gather(*(one() for _ in range(max(0, at_least - have))))

    asyncio.run(go())


@dataclass
class Row:
    case: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    floor: str | None = None
    floor_rps: float | None = None

    @property
    def ratio(self) -> float | None:
        return self.rps / self.floor_rps if self.floor_rps else None


def run(args: argparse.Namespace, work: Path, database_url: str, generator: str) -> list[Row]:
    stack = start_stack(work, database_url=database_url, replicas=args.replicas)
    try:
        return scenario(stack, args, work, generator)
    finally:
        stack.stop()


def scenario(stack: Stack, args: argparse.Namespace, work: Path, generator: str) -> list[Row]:
    d, c = args.duration, args.connections

    def go(case: Case, duration: float = d) -> Result:
        result = measure(case, generator=generator, duration=duration, connections=c, work=work)
        print(
            f"  {case.name:<28} {result.rps:9.0f} req/s  p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms"
            f"  errors {result.errors}",
            flush=True,
        )
        return result

    auth = {"Authorization": f"Bearer {stack.sub_key}"}
    json_headers = {**auth, "Content-Type": "application/json"}
    xml_headers = {"Content-Type": "text/xml"}
    openid = payer_openid(stack)
    create = Request(
        "POST",
        "/v1/payments",
        json_headers,
        json.dumps(
            {"amount": 1000, "currency": stack.sub["currency"], "description": "bench", "openid": openid}
        ).encode(),
    )
    sample_body = b"<xml>" + b"<a>x</a>" * 60 + b"</xml>"

    # Warm up every process and path (imports, connection pools, first SQL compilations).
    warm = max(1.0, d / 5)
    measure(
        Case("warm-up", stack.floor_url, [Request("GET", "/get", {})]),
        generator=generator,
        duration=warm,
        connections=c,
        work=work,
    )
    measure(Case("warm-up", stack.service_url, [create]), generator=generator, duration=warm, connections=c, work=work)
    order = replace(create, path="/orders")
    measure(Case("warm-up", stack.orders_url, [order]), generator=generator, duration=warm, connections=c, work=work)

    floor_get = go(Case("floor GET", stack.floor_url, [Request("GET", "/get", {})]))
    floor_post = go(Case("floor POST", stack.floor_url, [Request("POST", "/post", xml_headers, sample_body)]))
    one_write_get = go(Case("floor GET, one write", stack.one_write_url, [Request("GET", "/get", {})]))
    fastapi_get = go(Case("FastAPI GET", stack.fastapi_url, [Request("GET", "/get", {})]))
    fastapi_item = go(Case("FastAPI GET {id} + auth", stack.fastapi_url, [Request("GET", "/items/x1", auth)]))
    healthz = go(Case("GET /healthz", stack.service_url, [Request("GET", "/healthz", {})]))

    before = {p["id"] for p in pending_payments(stack, set())}
    post = go(Case("POST /v1/payments", stack.service_url, [create]))
    created = [p for p in pending_payments(stack, set()) if p["id"] not in before]
    stack.analyze()
    ids = [p["id"] for p in created] or list(before)
    # After the payments the GET reads are listed: the floor's orders are payments too.
    floor_orders = go(Case("floor POST + creation's SQL + unifiedorder", stack.orders_url, [order]))
    get = go(Case("GET /v1/payments/{id}", stack.service_url, [Request("GET", f"/v1/payments/{i}", auth) for i in ids]))
    fastapi_row = go(
        Case("FastAPI GET {id} + auth + read", stack.fastapi_url, [Request("GET", f"/rows/{i}", auth) for i in ids])
    )
    floor_lookup = go(Case("floor GET + lookup", stack.floor_url, [Request("GET", f"/rows/{i}", {}) for i in ids]))
    one_write_lookup = go(
        Case("floor GET + lookup, one write", stack.one_write_url, [Request("GET", f"/rows/{i}", {}) for i in ids])
    )
    # The floors again, after the cases measured against them: a virtual machine's speed moves by
    # tens of percent over minutes, and a ratio means something only against the floor of its time.
    floor_get_again = go(Case("floor GET (again)", stack.floor_url, [Request("GET", "/get", {})]))
    fastapi_writes = go(
        Case(
            "FastAPI POST + notify's SQL",
            stack.fastapi_url,
            [Request("POST", f"/writes/{i}", xml_headers, sample_body) for i in ids],
            xml_ok=True,
        )
    )
    # One validly signed notification, for the floor that also parses and verifies it.
    signed = notification(stack, (created or pending_payments(stack, set()))[0], 0)
    fastapi_verified = go(
        Case(
            "FastAPI POST + notify's parse + SQL",
            stack.fastapi_url,
            [Request("POST", f"/verified-writes/{i}", xml_headers, signed) for i in ids],
            xml_ok=True,
        )
    )

    # First-time notifications: one per pending payment, each sent once (the payments are created
    # through the service first, unmeasured when the POST case made too few).
    wanted = args.notifications or max(500, int(600 * d))
    pending = pending_payments(stack, set())
    if len(pending) < wanted:
        top_up(stack, create, wanted)
        stack.analyze()
        pending = pending_payments(stack, set())
    pending = pending[:wanted]
    bodies = [notification(stack, p, n) for n, p in enumerate(pending)]
    notify = [Request("POST", "/wechatpay/notify/payment", xml_headers, b) for b in bodies]
    first = go(Case("notify (first-time)", stack.service_url, notify, once=True, xml_ok=True), duration=max(30, 6 * d))
    applied = len(pending) - len(pending_payments(stack, {p["id"] for p in pending}))
    # Answered SUCCESS but not applied would be a lost notification: count it as an error.
    still = max(0, first.requests - first.errors - applied)
    if still:
        print(f"  !! {still} notifications answered SUCCESS were not applied", flush=True)
    dup = go(Case("notify (duplicate)", stack.service_url, notify, xml_ok=True))
    floor_post_again = go(
        Case("floor POST (again)", stack.floor_url, [Request("POST", "/post", xml_headers, sample_body)])
    )
    # Each ratio is against the mean of the floor measured before and after its case.
    floor_get_rps = (floor_get.rps + floor_get_again.rps) / 2
    floor_post_rps = (floor_post.rps + floor_post_again.rps) / 2

    def row(name: str, r: Result, floor_name: str | None = None, floor_rps: float | None = None) -> Row:
        return Row(
            name,
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.errors + (still if name == "notify (first-time)" else 0),
            r.requests,
            floor_name,
            floor_rps,
        )

    return [
        row("floor GET", floor_get),
        row("floor GET (again)", floor_get_again),
        row("floor POST", floor_post),
        row("floor POST (again)", floor_post_again),
        row("floor GET, one write", one_write_get, "floor GET", floor_get_rps),
        row("FastAPI GET", fastapi_get, "floor GET", floor_get_rps),
        row("FastAPI GET {id} + auth", fastapi_item, "floor GET", floor_get_rps),
        row("GET /healthz", healthz, "floor GET", floor_get_rps),
        row("FastAPI GET {id} + auth + read", fastapi_row, "floor GET", floor_get_rps),
        row("floor GET + lookup", floor_lookup, "floor GET", floor_get_rps),
        row("floor GET + lookup, one write", one_write_lookup, "floor GET", floor_get_rps),
        row("GET /v1/payments/{id}", get, "floor GET", floor_get_rps),
        row("POST /v1/payments", post, "floor POST", floor_post_rps),
        row("floor POST + creation's SQL + unifiedorder", floor_orders, "floor POST", floor_post_rps),
        row("FastAPI POST + notify's SQL", fastapi_writes, "floor POST", floor_post_rps),
        row("FastAPI POST + notify's parse + SQL", fastapi_verified, "floor POST", floor_post_rps),
        row("notify (first-time)", first, "floor POST", floor_post_rps),
        row("notify (duplicate)", dup, "floor POST", floor_post_rps),
    ]


#: How far apart the two measurements of a floor may be before the run says the machine's speed moved.
FLOOR_SPREAD = 0.15


def floor_drift(rows: list[Row]) -> list[str]:
    """A line per floor measured twice whose two figures differ by more than :data:`FLOOR_SPREAD`."""
    by = {r.case: r for r in rows}
    out = []
    for name in ("floor GET", "floor POST"):
        first, again = by.get(name), by.get(f"{name} (again)")
        if first and again and max(first.rps, again.rps) > 0:
            spread = abs(first.rps - again.rps) / max(first.rps, again.rps)
            if spread > FLOOR_SPREAD:
                out.append(
                    f"  !! {name} measured {first.rps:,.0f}/s, then {again.rps:,.0f}/s ({spread:.0%} apart): the"
                    " machine's speed moved during the run; its ratios are uncertain, run it again"
                )
    return out


def targets(rows: list[Row], db: str, replicas: int) -> list[tuple[str, bool]]:
    by = {r.case: r for r in rows}
    get, health, post = by["GET /v1/payments/{id}"], by["GET /healthz"], by["POST /v1/payments"]
    first, dup = by["notify (first-time)"], by["notify (duplicate)"]
    first_target = 800 if db == "postgres" and replicas >= 2 else 500
    get_target = f"GET /v1/payments/{{id}} >= 0.30x floor GET ({get.ratio or 0:.2f}x)"
    read_floor = by.get("floor GET + lookup")
    if read_floor and read_floor.ratio is not None and (get.ratio or 0) < 0.30:
        # Shown, not excused: the target stays missed, with the floor of the work that is left.
        reach = "out of reach on this machine: " if read_floor.ratio < 0.30 else ""
        get_target += (
            f"; {reach}the bare Starlette floor running the same keyed lookup and nothing else reaches"
            f" {read_floor.ratio:.2f}x, this GET {get.rps / read_floor.rps if read_floor.rps else 0:.2f}x of it"
        )
    first_check = f"first-time notifications >= {first_target}/s ({first.rps:.0f}/s)"
    # The most complete floor measured: the notification's parse, signature check and statements.
    floors = {
        "FastAPI POST + notify's parse + SQL": "the same parse, signature check and statements",
        "FastAPI POST + notify's SQL": "the same statements",
    }
    writes_floor = next((by[name] for name in floors if name in by), None)
    if writes_floor and writes_floor.rps < first_target and first.rps < first_target:
        first_check += (
            f"; out of reach in FastAPI on this machine: a POST route running {floors[writes_floor.case]}"
            f" and nothing else reaches {writes_floor.rps:.0f}/s"
        )
    post_check = f"POST /v1/payments >= 300/s ({post.rps:.0f}/s)"
    post_p99_check = f"POST /v1/payments p99 < 100 ms ({post.p99_ms:.1f} ms)"
    # The floor of a payment's creation: the same statements and the same unified order, nothing else.
    create_floor = by.get("floor POST + creation's SQL + unifiedorder")
    create_work = (
        "the bare Starlette floor running the same statements and the same unified order at the sandbox"
        " (as the service runs: one write a response, its start-up heap frozen)"
    )
    if create_floor and create_floor.rps < 300 and post.rps < 300:
        post_check += f"; out of reach on this machine: {create_work} and nothing else reaches {create_floor.rps:.0f}/s"
    if create_floor and create_floor.p99_ms >= 100 and post.p99_ms >= 100:
        post_p99_check += (
            f"; out of reach on this machine: {create_work} and nothing else has a p99 of {create_floor.p99_ms:.1f} ms"
        )
    checks = [
        (get_target, (get.ratio or 0) >= 0.30),
        (f"GET /v1/payments/{{id}} p99 < 25 ms ({get.p99_ms:.1f} ms)", get.p99_ms < 25),
        (f"GET /healthz >= 0.60x floor GET ({health.ratio or 0:.2f}x)", (health.ratio or 0) >= 0.60),
        (first_check, first.rps >= first_target),
        (f"duplicates >= 2x first-time ({dup.rps / first.rps if first.rps else 0:.2f}x)", dup.rps >= 2 * first.rps),
        (post_check, post.rps >= 300),
        (post_p99_check, post.p99_ms < 100),
        (f"no errors or timeouts ({sum(r.errors for r in rows)})", all(r.errors == 0 for r in rows)),
    ]
    return checks


def framework_share(rows: list[Row]) -> list[str]:
    """How far each read case is from FastAPI's own floors of the same route shape, bare and with the
    same SQL read: the floor of the work left once the framework is counted (information, no target)."""
    by = {r.case: r for r in rows}
    out = []
    for case, floor in (
        ("GET /healthz", "FastAPI GET"),
        ("GET /v1/payments/{id}", "FastAPI GET {id} + auth"),
        ("GET /v1/payments/{id}", "FastAPI GET {id} + auth + read"),
        ("GET /v1/payments/{id}", "floor GET + lookup"),
        ("GET /healthz", "floor GET, one write"),
        ("GET /v1/payments/{id}", "floor GET, one write"),
        ("GET /v1/payments/{id}", "floor GET + lookup, one write"),
        ("POST /v1/payments", "floor POST + creation's SQL + unifiedorder"),
        ("notify (first-time)", "FastAPI POST + notify's SQL"),
        ("notify (first-time)", "FastAPI POST + notify's parse + SQL"),
    ):
        mine, ceiling = by.get(case), by.get(floor)
        if mine and ceiling and ceiling.rps and ceiling.ratio:
            out.append(
                f"  {case}: {mine.rps / ceiling.rps:.2f}x of {floor!r}"
                f" (which is itself {ceiling.ratio:.2f}x of the Starlette floor)"
            )
    return out


def table(rows: list[Row]) -> str:
    head = ["case", "req/s", "p50 ms", "p99 ms", "errors", "floor", "floor req/s", "ratio"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        floor_rps = f"{r.floor_rps:,.0f}" if r.floor_rps else ""
        ratio = f"{r.ratio:.2f}x" if r.ratio else ""
        out.append(
            f"| {r.case:<24} | {r.rps:8,.0f} | {r.p50_ms:7.2f} | {r.p99_ms:7.2f} | {r.errors:6d} | {r.floor or '':<10} "
            f"| {floor_rps:>11} | {ratio:>6} |"
        )
    return "\n".join(out)


# -- PostgreSQL: a fresh database per run ----------------------------------------------------------------


def _pg(admin_url: str, sql: str) -> Any:
    """Run ``sql`` in autocommit; its first value, if it returns rows."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def go() -> Any:
        engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                result = await conn.execute(text(sql))
                return result.scalar() if result.returns_rows else None
        finally:
            await engine.dispose()

    return asyncio.run(go())


def autogroup(pg_url: str, proc: Path = Path("/proc")) -> dict[str, bool | None]:
    """Whether the kernel's autogroup is on and, if so, whether the PostgreSQL server (on this
    machine) runs in another autogroup than this run (None: could not tell)."""
    try:
        enabled = (proc / "sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return {"enabled": False, "database_apart": None}
    if not enabled:
        return {"enabled": False, "database_apart": None}
    try:
        pid = _pg(pg_url, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
        theirs = (proc / str(int(pid)) / "autogroup").read_text().split()[0]
        ours = (proc / "self/autogroup").read_text().split()[0]
    except (OSError, TypeError, ValueError):
        return {"enabled": True, "database_apart": None}  # not on this machine, or not readable
    return {"enabled": True, "database_apart": theirs != ours}


AUTOGROUP_WARNING = """\
  !! the kernel's autogroup is on (kernel.sched_autogroup_enabled = 1) and PostgreSQL runs in a
     session of its own: the kernel shares the CPU between PostgreSQL's processes as one group and
     this run's (service, floors, wrk) as another, not between processes. Measured on a 2-CPU
     machine: every PostgreSQL connection stalled at times for up to ~1 s (GET p99 50-2,900 ms,
     with or without the service), and the GET served 15-25 % less. For figures of the service
     rather than of the scheduler: sysctl -w kernel.sched_autogroup_enabled=0 (until a reboot)."""


def database_url(pg_url: str, name: str) -> str:
    """``pg_url`` with the database ``name``: the same server, user and options (a Unix-socket URL's
    ``?host=/run/postgresql``, say)."""
    from sqlalchemy.engine import make_url

    return make_url(pg_url).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def database(db: str, pg_url: str, work: Path) -> Iterator[str]:
    if db == "sqlite":
        yield f"sqlite+aiosqlite:///{work / 'bench.db'}"
        return
    name = f"minipay_bench_{os.getpid()}_{secrets.token_hex(4)}"
    _pg(pg_url, f'CREATE DATABASE "{name}"')
    try:
        yield database_url(pg_url, name)
    finally:
        _pg(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--replicas", type=int, default=1, help="service (and floor) processes on one port")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per case")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--notifications", type=int, default=0, help="first-time notifications (default: 1,500/s x duration)"
    )
    parser.add_argument("--generator", choices=["auto", "wrk", "builtin"], default="auto")
    parser.add_argument("--pg-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds; no thresholds")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (config, process log)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 1.0)
        args.notifications = args.notifications or 200
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "builtin"
        if generator == "builtin":
            print(WRK_HOWTO)
    work = Path(tempfile.mkdtemp(prefix="minipay-bench-"))
    print(
        f"bench/service.py: --db {args.db} --replicas {args.replicas}, {args.connections} connections, "
        f"{args.duration:g} s per case, load generator {generator}; {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}",
        flush=True,
    )
    grouping = autogroup(args.pg_url) if args.db == "postgres" else {"enabled": None, "database_apart": None}
    if grouping["database_apart"]:
        print(AUTOGROUP_WARNING, flush=True)
    try:
        with database(args.db, args.pg_url, work) as url:
            rows = run(args, work, url, generator)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(rows))
    checks = targets(rows, args.db, args.replicas)
    print()
    for text, ok in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {text}")
    print()
    for line in framework_share(rows):
        print(line)
    for line in floor_drift(rows):
        print(line)
    if grouping["database_apart"]:
        print(AUTOGROUP_WARNING)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "db": args.db,
                    "replicas": args.replicas,
                    "connections": args.connections,
                    "duration": args.duration,
                    "generator": generator,
                    "when": datetime.now(UTC).isoformat(timespec="seconds"),
                    "cpus": os.cpu_count(),
                    "autogroup": grouping,
                    "rows": [{**asdict(r), "ratio": r.ratio} for r in rows],
                    "targets": [{"target": t, "met": ok} for t, ok in checks],
                },
                indent=2,
            )
        )
    missed = [t for t, ok in checks if not ok]
    if args.quick:
        print("\n--quick: a smoke run, targets not enforced")
        return 0
    if missed:
        print(f"\n{len(missed)} target(s) missed")
        return 1
    print("\nevery target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
