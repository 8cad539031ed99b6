"""Client-certificate material: PEM pair or .p12, path or bytes, converted in memory."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from minipay.client import Client, ClientCertificate, ConfigurationError
from tests.client.pki import issue, make_ca

MCH_ID = "1900000109"


@pytest.fixture(scope="module")
def pair() -> tuple[bytes, bytes, bytes]:
    ca = make_ca()
    client = issue(ca, MCH_ID, server=False)
    return client.cert_pem, client.key_pem(), client.p12(MCH_ID.encode())


def test_a_pem_pair_loads_from_bytes_and_from_paths(pair: tuple[bytes, bytes, bytes], tmp_path: Path) -> None:
    cert_pem, key_pem, _ = pair
    from_bytes = ClientCertificate.from_pem(cert_pem, key_pem)
    (tmp_path / "apiclient_cert.pem").write_bytes(cert_pem)
    (tmp_path / "apiclient_key.pem").write_bytes(key_pem)
    from_paths = ClientCertificate.from_pem(tmp_path / "apiclient_cert.pem", str(tmp_path / "apiclient_key.pem"))
    assert from_bytes.fingerprint_sha256() == from_paths.fingerprint_sha256()
    context = ssl.create_default_context()
    from_bytes.load_into(context, mch_id=MCH_ID)


def test_an_encrypted_pem_key_needs_its_password() -> None:
    issued = issue(make_ca(), MCH_ID, server=False)
    ClientCertificate.from_pem(issued.cert_pem, issued.key_pem(b"pw"), password="pw")
    with pytest.raises(ConfigurationError, match="password is wrong"):
        ClientCertificate.from_pem(issued.cert_pem, issued.key_pem(b"pw"))


def test_a_p12_password_defaults_to_the_mch_id(pair: tuple[bytes, bytes, bytes], tmp_path: Path) -> None:
    cert_pem, key_pem, p12 = pair
    (tmp_path / "apiclient_cert.p12").write_bytes(p12)
    certificate = ClientCertificate.from_p12(tmp_path / "apiclient_cert.p12")
    client = Client(appid="wx8888888888888888", mch_id=MCH_ID, api_key="a" * 32, cert=certificate)
    client.close()
    assert (
        certificate.fingerprint_sha256(mch_id=MCH_ID)
        == ClientCertificate.from_pem(cert_pem, key_pem).fingerprint_sha256()
    )


def test_a_wrong_p12_password_fails_when_the_client_is_built() -> None:
    p12 = issue(make_ca(), MCH_ID, server=False).p12(b"other")
    with pytest.raises(ConfigurationError, match="wrong password"):
        ClientCertificate.from_p12(p12, password="nope")
    deferred = ClientCertificate.from_p12(p12)  # the mch_id is only known to the client
    with pytest.raises(ConfigurationError, match="wrong password"):
        Client(appid="wx8888888888888888", mch_id=MCH_ID, api_key="a" * 32, cert=deferred)


def test_a_key_that_does_not_match_the_certificate_is_refused() -> None:
    ca = make_ca()
    one, two = issue(ca, MCH_ID, server=False), issue(ca, MCH_ID, server=False)
    with pytest.raises(ConfigurationError, match="does not match"):
        ClientCertificate.from_pem(one.cert_pem, two.key_pem())


def test_garbage_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        ClientCertificate.from_pem(b"not a cert", b"not a key")
    with pytest.raises(ConfigurationError, match="cannot read"):
        ClientCertificate.from_p12(tmp_path / "missing.p12", password="x")


def test_the_key_never_lands_on_disk_in_clear(
    pair: tuple[bytes, bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert_pem, key_pem, _ = pair
    certificate = ClientCertificate.from_pem(cert_pem, key_pem)
    seen: list[bytes] = []
    real = ssl.SSLContext.load_cert_chain

    def spy(self: ssl.SSLContext, certfile: str, keyfile: str | None = None, password: object = None) -> None:
        seen.append(Path(certfile).read_bytes())
        assert certfile.startswith("/proc/self/fd/")  # an anonymous in-memory file on Linux
        real(self, certfile, keyfile, password)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    certificate.load_into(ssl.create_default_context(), mch_id=MCH_ID)
    [loaded] = seen
    assert b"ENCRYPTED PRIVATE KEY" in loaded  # re-encrypted with a one-off passphrase
    assert key_pem not in loaded


def test_a_certificate_repr_shows_no_key(pair: tuple[bytes, bytes, bytes]) -> None:
    cert_pem, key_pem, _ = pair
    text = repr(ClientCertificate.from_pem(cert_pem, key_pem))
    assert "PRIVATE" not in text
    assert "**********" in text
