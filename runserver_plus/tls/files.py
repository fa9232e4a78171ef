"""Which certificate and key a server uses, checked before it serves."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from runserver_plus.tls import TLSSetupError
from runserver_plus.tls.authority import (
    load_or_create_authority,
    server_certificate,
)

_PUBLIC = (
    serialization.Encoding.DER,
    serialization.PublicFormat.SubjectPublicKeyInfo,
)


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    """The files a server loads into its TLS context."""

    cert_file: str
    #: Empty when the key is in ``cert_file``.
    key_file: str = ""
    #: The local certificate authority's certificate, when it signed them.
    ca_file: str = ""
    #: What the user should know but that does not stop the server.
    warnings: tuple[str, ...] = ()


def local_files(ca_dir: Path, names: tuple[str, ...]) -> TLSFiles:
    """A certificate for ``names`` from the local certificate authority."""
    authority = load_or_create_authority(ca_dir)
    path = server_certificate(authority, names)
    return TLSFiles(cert_file=str(path), ca_file=str(authority.cert_path))


def user_files(
    cert_file: str, key_file: str = "", now: datetime.datetime | None = None
) -> TLSFiles:
    """The user's own certificate and key, checked the way a client and
    OpenSSL would check them, so that each problem is one clear line.

    ``key_file`` empty: the key is in the certificate's file. An expired
    certificate is a warning, not an error (see the README).
    """
    cert_data = _read(cert_file, "certificate")
    try:
        chain = x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        raise TLSSetupError(
            f"The certificate file {cert_file} holds no PEM certificate."
        ) from None
    key_path = key_file or cert_file
    key = _load_key(key_path, _read(key_path, "key") if key_file else cert_data)
    certificate = chain[0]
    if certificate.public_key().public_bytes(*_PUBLIC) != key.public_key().public_bytes(
        *_PUBLIC
    ):
        raise TLSSetupError(
            f"The key in {key_path} does not match the certificate in {cert_file}."
        )
    warnings = []
    when = now or datetime.datetime.now(datetime.timezone.utc)
    if certificate.not_valid_after_utc < when:
        warnings.append(
            f"The certificate in {cert_file} expired on "
            f"{certificate.not_valid_after_utc:%Y-%m-%d}: browsers will warn."
        )
    elif certificate.not_valid_before_utc > when:
        warnings.append(
            f"The certificate in {cert_file} is not valid before "
            f"{certificate.not_valid_before_utc:%Y-%m-%d}: browsers will warn."
        )
    return TLSFiles(
        cert_file=str(Path(cert_file).absolute()),
        key_file=str(Path(key_file).absolute()) if key_file else "",
        warnings=tuple(warnings),
    )


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TLSSetupError(f"The {what} file {path} does not exist.") from None
    except OSError as error:
        raise TLSSetupError(
            f"The {what} file {path} cannot be read ({error.strerror or error})."
        ) from None


def _load_key(path: str, data: bytes) -> PrivateKeyTypes:
    if b"PRIVATE KEY-----" not in data:
        raise TLSSetupError(
            f"{path} holds no PEM private key; pass the key with --key-file."
        )
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        # cryptography's way of saying "encrypted, and no password given".
        raise TLSSetupError(
            f"The key in {path} is protected by a passphrase, which runserver "
            "cannot ask for; give it a copy of the key without one."
        ) from None
    except ValueError as error:
        raise TLSSetupError(f"The key in {path} cannot be loaded ({error}).") from None
