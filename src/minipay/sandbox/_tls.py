"""``--tls``: a throw-away CA, a server certificate for loopback, and the institution's client
certificate (PEM and PKCS#12, password = ``mch_id`` as WeChat does), all made with ``cryptography``.

uvicorn does not put the peer certificate in the ASGI scope, so :class:`SandboxH11Protocol` (the
HTTP protocol ``minipay sandbox`` runs) adds the ASGI TLS extension
(``scope["extensions"]["tls"]["client_cert_chain"]``) and a ``minipay.abort`` hook that closes the
connection without an answer (faults ``drop`` / ``lost_response``). The TLS layer asks for a
client certificate (``CERT_OPTIONAL``, verified against the CA when sent); ``/secapi/*`` then
refuses a request without one, or with one whose CN is not the request's ``mch_id``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["SandboxH11Protocol", "TLSMaterial", "generate_tls_material", "load_or_generate_tls_material"]


@dataclass(frozen=True)
class TLSMaterial:
    """Where the generated files are. ``client_p12_password`` is the institution's ``mch_id``."""

    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_p12: Path
    client_p12_password: str

    def to_json(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.__dict__.items()}

    def uvicorn_options(self) -> dict[str, Any]:
        """``uvicorn.Config`` arguments of the HTTPS listener: it asks for a client certificate, verified
        against the CA when one is sent (mutual TLS on ``/secapi``). Serve it with ``SandboxH11Protocol``."""
        return {
            "ssl_certfile": str(self.server_cert),
            "ssl_keyfile": str(self.server_key),
            "ssl_ca_certs": str(self.ca_cert),
            "ssl_cert_reqs": ssl.CERT_OPTIONAL,
        }


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Minipay sandbox"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    fmt = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def generate_tls_material(directory: str | Path, *, mch_id: str, days: int = 30) -> TLSMaterial:
    """Write a CA, a server certificate (127.0.0.1, ::1, localhost) and a client certificate for ``mch_id``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC) - timedelta(minutes=5)
    until = now + timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Minipay sandbox test CA (not for production)")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName] | None) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    server_key, server = leaf(
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ],
    )
    client_key, client = leaf(mch_id, ExtendedKeyUsageOID.CLIENT_AUTH, None)

    pem = serialization.Encoding.PEM
    p12 = pkcs12.serialize_key_and_certificates(
        name=mch_id.encode(),
        key=client_key,
        cert=client,
        cas=[ca],
        encryption_algorithm=serialization.BestAvailableEncryption(mch_id.encode()),
    )
    return TLSMaterial(
        directory=out,
        ca_cert=_write(out / "ca.pem", ca.public_bytes(pem)),
        server_cert=_write(out / "server.pem", server.public_bytes(pem)),
        server_key=_write(out / "server.key", _key_pem(server_key), private=True),
        client_cert=_write(out / "apiclient_cert.pem", client.public_bytes(pem)),
        client_key=_write(out / "apiclient_key.pem", _key_pem(client_key), private=True),
        client_p12=_write(out / "apiclient_cert.p12", p12, private=True),
        client_p12_password=mch_id,
    )


def _material(out: Path, mch_id: str) -> TLSMaterial:
    return TLSMaterial(
        directory=out,
        ca_cert=out / "ca.pem",
        server_cert=out / "server.pem",
        server_key=out / "server.key",
        client_cert=out / "apiclient_cert.pem",
        client_key=out / "apiclient_key.pem",
        client_p12=out / "apiclient_cert.p12",
        client_p12_password=mch_id,
    )


def load_or_generate_tls_material(directory: str | Path, *, mch_id: str) -> TLSMaterial:
    """Reuse the files in ``directory`` when they are complete, for ``mch_id`` and valid for a day
    more (so an SDK configured with them keeps working across restarts, and a user may put their own
    server certificate there); otherwise generate new ones."""
    material = _material(Path(directory), mch_id)
    paths = [material.ca_cert, material.server_cert, material.server_key, material.client_cert,
             material.client_key, material.client_p12]  # fmt: skip
    if all(p.exists() for p in paths):
        try:
            client = x509.load_pem_x509_certificate(material.client_cert.read_bytes())
            server = x509.load_pem_x509_certificate(material.server_cert.read_bytes())
        except ValueError:
            return generate_tls_material(directory, mch_id=mch_id)
        cn = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        fresh = datetime.now(UTC) + timedelta(days=1)
        if cn and cn[0].value == mch_id and client.not_valid_after_utc > fresh and server.not_valid_after_utc > fresh:
            return material
    return generate_tls_material(directory, mch_id=mch_id)


class SandboxH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus the ASGI TLS extension and an abort hook (see module docstring)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        chain: list[str] = []
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)
            if der:
                chain.append(ssl.DER_cert_to_PEM_cert(der))
        inner = self.app

        def abort() -> None:
            transport.abort()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            extensions = dict(scope.get("extensions") or {})
            extensions["minipay.abort"] = abort
            if ssl_object is not None:
                extensions["tls"] = {
                    "server_cert": None,
                    "client_cert_chain": chain,
                    "client_cert_name": None,
                    "client_cert_error": None,
                    "tls_version": None,
                    "cipher_suite": None,
                }
            scope["extensions"] = extensions
            await inner(scope, receive, send)

        self.app = app
