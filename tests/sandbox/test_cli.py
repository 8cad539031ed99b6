"""``minipay sandbox``: options, banner, and one real run as a subprocess."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from minipay.protocol import ConfigurationError
from minipay.sandbox._cli import banner, prepare, sandbox_main
from minipay.serve import free_ports
from tests.sandbox.conftest import KEY, MCH_ID


def test_prepare_runs_the_clock_in_real_time_and_makes_tls_material(tmp_path: Path) -> None:
    config, material = prepare(config_path=None, seed=5, tls=True, tls_dir=str(tmp_path), speed=60.0, frozen=False)
    assert config.seed == 5
    assert config.clock.realtime is True
    assert config.clock.speed == 60.0
    assert config.tls.require_client_cert is True
    assert material is not None
    assert material.client_p12.exists()
    text = banner(config, "https://127.0.0.1:8801", material, None)
    assert "https://127.0.0.1:8801/sandbox/" in text
    assert f"mch_id={MCH_ID} api_key={KEY}" in text
    assert str(material.client_p12) in text
    assert "x60" in text


def test_tls_material_is_reused_across_runs_for_the_same_mch_id(tmp_path: Path) -> None:
    _, first = prepare(config_path=None, seed=None, tls=True, tls_dir=str(tmp_path), speed=1.0, frozen=False)
    _, second = prepare(config_path=None, seed=None, tls=True, tls_dir=str(tmp_path), speed=1.0, frozen=False)
    assert first is not None
    assert second is not None
    assert first.client_cert.read_bytes() == second.client_cert.read_bytes()
    from minipay.sandbox._tls import load_or_generate_tls_material

    kept = first.client_cert.read_bytes()
    other = load_or_generate_tls_material(tmp_path, mch_id="1900000999")  # another institution: new files
    assert other.client_cert.read_bytes() != kept
    cert = x509.load_pem_x509_certificate(other.client_cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "1900000999"
    assert other.client_p12_password == "1900000999"


def test_prepare_frozen_lenient_without_tls(tmp_path: Path) -> None:
    config, material = prepare(
        config_path=None, seed=None, tls=False, tls_dir=str(tmp_path), speed=1.0, frozen=True, profile="lenient"
    )
    assert material is None
    assert config.clock.realtime is False
    assert config.effective.require_client_cert is False
    assert list(tmp_path.iterdir()) == []


def test_prepare_is_strict_by_default_with_mutual_tls_material(tmp_path: Path) -> None:
    config, material = prepare(config_path=None, seed=None, tls=False, tls_dir=str(tmp_path), speed=1.0, frozen=True)
    assert config.effective.profile == "strict"
    assert config.effective.require_client_cert is True
    assert material is not None
    assert material.client_p12.exists()
    text = banner(config, "http://127.0.0.1:8801", material, None, tls_url="https://127.0.0.1:8802")
    assert "https://127.0.0.1:8802" in text
    assert str(material.ca_cert) in text
    assert str(material.client_cert) in text
    lenient_file = tmp_path / "world.toml"
    lenient_file.write_text('[rules]\nprofile = "lenient"\n')
    config, material = prepare(
        config_path=str(lenient_file), seed=None, tls=False, tls_dir=str(tmp_path), speed=1.0, frozen=True
    )
    assert (config.effective.profile, material) == ("lenient", None)  # the file's profile wins over the default


@pytest.mark.parametrize("speed", [0.0, -1.0, float("nan"), float("inf")])
def test_a_speed_the_clock_cannot_run_at_is_a_clear_error(speed: float) -> None:
    # model_copy() skipped validation: --speed 0 crashed later and --speed nan broke every request.
    with pytest.raises(ConfigurationError, match=r"clock\.speed"):
        prepare(config_path=None, seed=None, tls=False, tls_dir=".", speed=speed, frozen=False)
    lines: list[str] = []
    with pytest.raises(SystemExit) as exit_info:
        sandbox_main(host="127.0.0.1", port=0, config_path=None, seed=None, state=None, tls=False, tls_dir=".",
                     speed=speed, frozen=False, echo=lines.append)  # fmt: skip
    assert exit_info.value.code == 2
    assert lines[0].startswith("error: invalid sandbox config: clock.speed")


def test_minipay_sandbox_command_serves_and_prints_its_credentials(tmp_path: Path) -> None:
    [port] = free_ports(1)
    state = tmp_path / "state.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tls_dir = tmp_path / "tls"
    cmd = [sys.executable, "-c", "from minipay.cli import main; main()", "sandbox", "--port", str(port), "--seed", "2",
           "--state", str(state), "--tls", "--tls-dir", str(tls_dir)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                trust = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
                response = httpx2.get(f"https://127.0.0.1:{port}/sandbox/merchants", timeout=1, verify=trust)
                break
            except (OSError, httpx2.TransportError):  # no CA file yet, or not listening yet
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "minipay sandbox did not start"
                time.sleep(0.1)
        world = response.json()
        assert world["institutions"][0]["mch_id"] == MCH_ID
        assert world["tls"]["client_p12"] == str(tls_dir / "apiclient_cert.p12")
        clock = httpx2.get(f"https://127.0.0.1:{port}/sandbox/clock", timeout=2, verify=trust).json()
        assert clock["realtime"] is True
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    assert f"https://127.0.0.1:{port}" in out
    assert f"api_key={KEY}" in out
    assert state.exists()


def test_minipay_sandbox_strict_serves_http_and_mutual_tls_https(tmp_path: Path) -> None:
    port, tls_port = free_ports(2)
    tls_dir = tmp_path / "tls"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-c", "from minipay.cli import main; main()", "sandbox", "--port", str(port),
           "--tls-port", str(tls_port), "--tls-dir", str(tls_dir), "--frozen"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        deadline = time.monotonic() + 120  # a cold start under a loaded CI machine
        while True:
            try:
                trust = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
                httpx2.get(f"https://127.0.0.1:{tls_port}/sandbox/clock", timeout=1, verify=trust)
                break
            except (OSError, httpx2.TransportError):
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "minipay sandbox did not start"
                time.sleep(0.1)
        body = b"<xml><appid>wx8888888888888888</appid><mch_id>1900000109</mch_id></xml>"
        # Plain HTTP serves every path, but /secapi without the certificate is refused as WeChat does.
        assert httpx2.get(f"http://127.0.0.1:{port}/sandbox/clock", timeout=2).status_code == 200
        plain = httpx2.post(f"http://127.0.0.1:{port}/secapi/pay/refund", content=body, timeout=2)
        assert "证书错误" in plain.text
        bare = httpx2.post(f"https://127.0.0.1:{tls_port}/secapi/pay/refund", content=body, timeout=2, verify=trust)
        assert "证书错误" in bare.text
        trust.load_cert_chain(tls_dir / "apiclient_cert.pem", tls_dir / "apiclient_key.pem")
        with_cert = httpx2.post(
            f"https://127.0.0.1:{tls_port}/secapi/pay/refund", content=body, timeout=2, verify=trust
        )
        assert "证书错误" not in with_cert.text  # past the certificate: the signature is checked next
        assert "签名错误" in with_cert.text
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    assert f"https://127.0.0.1:{tls_port}" in out
    assert str(tls_dir / "ca.pem") in out
    assert str(tls_dir / "apiclient_cert.p12") in out
    assert "profile     strict" in out
