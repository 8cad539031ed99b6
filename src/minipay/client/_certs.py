"""The institution's API certificate for mutual TLS on ``/secapi/pay/refund`` (spec 2.2, 10).

Accepted as a PEM pair (certificate + private key) or a PKCS#12 ``.p12``, each as a path or as bytes;
the ``.p12`` password defaults to the institution's ``mch_id`` (WeChat's convention). Everything is
converted in memory with ``cryptography``. Python's :mod:`ssl` only loads a key from a file, so the
key is re-encrypted with a one-off random passphrase and handed to ``load_cert_chain`` through an
anonymous in-memory file (``memfd_create``, Linux); elsewhere through a private temporary file
(directory mode 0700) that is deleted as soon as it is loaded. The key never touches a disk in clear.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from minipay.protocol import ConfigurationError

__all__ = ["CertSource", "ClientCertificate", "VerifyTypes", "build_ssl_context"]

CertSource: TypeAlias = bytes | str | os.PathLike[str]
VerifyTypes: TypeAlias = ssl.SSLContext | str | bool


def _read(source: CertSource, what: str) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str) and "-----BEGIN" in source:
        return source.encode("ascii")
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the {what} file: {exc.strerror}") from None


def _password(value: bytes | str | None) -> bytes | None:
    if value is None:
        return None
    return value.encode() if isinstance(value, str) else bytes(value)


@dataclass(frozen=True, slots=True, repr=False)
class _Material:
    chain: tuple[x509.Certificate, ...]
    key: PrivateKeyTypes


@dataclass(frozen=True, slots=True, repr=False)
class ClientCertificate:
    """Client-certificate material; build it with :meth:`from_pem` or :meth:`from_p12`.

    >>> cert = ClientCertificate.from_p12("apiclient_cert.p12")   # doctest: +SKIP
    >>> Client(..., cert=cert)                                    # doctest: +SKIP
    """

    _pem: _Material | None = None
    _p12: bytes | None = None
    _p12_password: bytes | None = field(default=None)

    @classmethod
    def from_pem(cls, cert: CertSource, key: CertSource, password: bytes | str | None = None) -> ClientCertificate:
        """A PEM certificate (chain) and its private key (``password`` if the key is encrypted)."""
        cert_data = _read(cert, "certificate")
        key_data = _read(key, "private key")
        try:
            chain = tuple(x509.load_pem_x509_certificates(cert_data))
        except ValueError:
            raise ConfigurationError("the certificate is not a PEM X.509 certificate") from None
        try:
            private_key = serialization.load_pem_private_key(key_data, _password(password))
        except (ValueError, TypeError):
            raise ConfigurationError("the private key is not a PEM key, or its password is wrong") from None
        return cls(_pem=_check(_Material(chain, private_key)))

    @classmethod
    def from_p12(cls, p12: CertSource, password: bytes | str | None = None) -> ClientCertificate:
        """A PKCS#12 bundle (``apiclient_cert.p12``); ``password`` defaults to the client's ``mch_id``."""
        data = _read(p12, "PKCS#12")
        certificate = cls(_p12=data, _p12_password=_password(password))
        if password is not None:
            certificate.material(mch_id="")  # fail now, not at the first refund
        return certificate

    def material(self, *, mch_id: str) -> _Material:
        """The certificate chain and key (the ``.p12`` is opened with ``mch_id`` when no password was given)."""
        if self._pem is not None:
            return self._pem
        assert self._p12 is not None
        password = self._p12_password if self._p12_password is not None else mch_id.encode()
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(self._p12, password)
        except (ValueError, TypeError):
            raise ConfigurationError(
                "cannot open the PKCS#12 certificate: not a .p12 file, or wrong password "
                "(WeChat's default password is the mch_id)"
            ) from None
        if key is None or cert is None:
            raise ConfigurationError("the PKCS#12 file holds no private key or no certificate")
        return _check(_Material((cert, *extra), key))

    def fingerprint_sha256(self, *, mch_id: str = "") -> str:
        """Upper-case hex SHA-256 fingerprint of the leaf certificate (safe to print)."""
        return self.material(mch_id=mch_id).chain[0].fingerprint(hashes.SHA256()).hex().upper()

    def load_into(self, context: ssl.SSLContext, *, mch_id: str) -> None:
        """Load the certificate and key into ``context`` without leaving the key on disk in clear."""
        material = self.material(mch_id=mch_id)
        passphrase = secrets.token_urlsafe(32).encode()
        key_pem = material.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )
        chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in material.chain)
        with _transient_file(key_pem + chain_pem) as path:
            try:
                context.load_cert_chain(path, password=passphrase)
            except ssl.SSLError:
                raise ConfigurationError("the certificate does not match its private key") from None

    def __repr__(self) -> str:
        kind = "PEM" if self._pem is not None else "PKCS#12"
        return f"ClientCertificate({kind}, key=**********)"


def _check(material: _Material) -> _Material:
    if not material.chain:
        raise ConfigurationError("no certificate found")
    public = material.key.public_key()
    leaf = material.chain[0].public_key()
    same = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == leaf.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not same:
        raise ConfigurationError("the certificate does not match its private key")
    return material


@contextlib.contextmanager
def _transient_file(data: bytes) -> Iterator[str]:
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd_create("minipay-client-cert", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
            return
        finally:
            os.close(fd)
    with tempfile.TemporaryDirectory(prefix="minipay-cert-") as directory:  # mode 0700
        path = os.path.join(directory, "client.pem")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.remove(path)


def build_ssl_context(
    verify: VerifyTypes, cert: ClientCertificate | None = None, *, mch_id: str = ""
) -> ssl.SSLContext:
    """An :class:`ssl.SSLContext` trusting ``verify`` (True: system CAs, a path: that CA file or
    directory, False: no verification, or a context used as is) with ``cert`` loaded when given."""
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif verify is True:
        context = ssl.create_default_context()
    elif verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        path = Path(verify)
        if path.is_dir():
            context = ssl.create_default_context(capath=str(path))
        elif path.is_file():
            context = ssl.create_default_context(cafile=str(path))
        else:
            raise ConfigurationError(f"verify: no CA file or directory at {verify!r}")
    if cert is not None:
        cert.load_into(context, mch_id=mch_id)
    return context
