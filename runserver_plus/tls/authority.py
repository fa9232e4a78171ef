"""The per-user local certificate authority and the server certificates it signs."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import getpass
import hashlib
import ipaddress
import os
import socket
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runserver_plus.tls import TLSSetupError

#: Overrides where the certificate authority lives.
CA_DIR_ENV = "RUNSERVER_PLUS_CA_DIR"
#: The certificate authority: its key and certificate in one file, private.
CA_KEY_FILE = "ca-key.pem"
#: Its certificate alone, the file users give to their trust stores.
CA_CERT_FILE = "ca.pem"
CA_VALIDITY = datetime.timedelta(days=3650)
#: macOS refuses server certificates valid for longer than 825 days, even
#: from a CA the user added; a year keeps every platform happy.
SERVER_VALIDITY = datetime.timedelta(days=397)
#: A server certificate this close to its end is issued again.
REISSUE_BEFORE = datetime.timedelta(days=30)
#: Certificates start a little in the past: clocks of the machines that check
#: them (a phone on the LAN) may run behind.
BACKDATE = datetime.timedelta(hours=1)
#: Names every server certificate holds, besides the host name.
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def default_ca_dir(
    environ: Mapping[str, str] | None = None, platform: str = sys.platform
) -> Path:
    """The user's data directory for the certificate authority.

    ``$XDG_DATA_HOME`` (or ``~/.local/share``) on Linux and other Unixes,
    ``~/Library/Application Support`` on macOS, ``%LOCALAPPDATA%`` on Windows;
    ``RUNSERVER_PLUS_CA_DIR`` overrides it.
    """
    env = os.environ if environ is None else environ
    if env.get(CA_DIR_ENV):
        return Path(env[CA_DIR_ENV]).expanduser()
    home = Path(env.get("HOME") or Path.home())
    if platform == "win32":
        base = Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "runserver_plus" / "ca"


@dataclasses.dataclass(frozen=True)
class Authority:
    """A loaded certificate authority."""

    directory: Path
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def cert_path(self) -> Path:
        return self.directory / CA_CERT_FILE

    @property
    def common_name(self) -> str:
        """Its name, also its nickname in NSS databases."""
        names = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else "runserver_plus CA"


def server_names(hostname: str, lan_addresses: Iterable[str] = ()) -> tuple[str, ...]:
    """What a server certificate must be valid for, in a stable order:
    the local names, the host name, then the LAN addresses the banner lists."""
    names = [*LOCAL_NAMES, hostname.lower(), *lan_addresses]
    return tuple(dict.fromkeys(n for n in names if n))


def local_hostname() -> str:
    return socket.gethostname()


def load_or_create_authority(directory: Path) -> Authority:
    """The certificate authority in ``directory``, created the first time.

    Creation is atomic: of two servers that start at once, one creates it
    and the other loads it. ``TLSSetupError`` when the directory cannot be
    written or holds something unreadable.
    """
    key_path = directory / CA_KEY_FILE
    if not key_path.exists():
        _create_authority(directory)
    authority = _load_authority(directory)
    _write_public_cert(authority)
    return authority


def _create_authority(directory: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "runserver_plus"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"runserver_plus CA {_owner()}"),
        ]
    )
    now = _now()
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), False)
        .sign(key, hashes.SHA256())
    )
    _make_dir(directory)
    # os.link() fails when the name exists: whoever links first wins, and
    # nobody ever sees a half-written key.
    with _private_temp(directory, _pem(key) + _pem(certificate)) as temp:
        try:
            os.link(temp, directory / CA_KEY_FILE)
        except FileExistsError:
            pass  # another server created it meanwhile: use theirs
        except OSError as error:
            raise _unwritable(directory, error) from None


def _load_authority(directory: Path) -> Authority:
    path = directory / CA_KEY_FILE
    try:
        data = path.read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
        certificate = x509.load_pem_x509_certificate(data)
    except (OSError, ValueError, TypeError) as error:
        raise TLSSetupError(
            f"The certificate authority {path} cannot be loaded ({error}); remove "
            f"{directory} to have a new one made."
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TLSSetupError(f"The certificate authority {path} is not one of ours.")
    return Authority(directory, key, certificate)


def _write_public_cert(authority: Authority) -> None:
    """(Re)write ``ca.pem``, the certificate users import, if it is missing."""
    data = _pem(authority.certificate)
    path = authority.cert_path
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            return
    try:
        with tempfile.NamedTemporaryFile(dir=authority.directory, delete=False) as f:
            f.write(data)
        os.chmod(f.name, 0o644)
        os.replace(f.name, path)
    except OSError as error:
        raise _unwritable(authority.directory, error) from None


def server_certificate(
    authority: Authority, names: tuple[str, ...], now: datetime.datetime | None = None
) -> Path:
    """A file with a key and a certificate for ``names`` signed by ``authority``.

    One file per set of names, so that servers bound differently never
    replace each other's; it is issued again when it is missing, unreadable,
    from another authority, or within ``REISSUE_BEFORE`` of its end.
    """
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
    path = authority.directory / f"server-{digest}.pem"
    when = now or _now()
    if not _needs_issue(path, authority, when):
        return path
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "runserver_plus"),
                    x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
                ]
            )
        )
        .issuer_name(authority.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(when - BACKDATE)
        .not_valid_after(when + SERVER_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                authority.key.public_key()
            ),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    with _private_temp(authority.directory, _pem(key) + _pem(certificate)) as temp:
        try:
            os.replace(temp, path)
        except OSError as error:
            raise _unwritable(authority.directory, error) from None
    return path


def _needs_issue(path: Path, authority: Authority, now: datetime.datetime) -> bool:
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return True
    if certificate.issuer != authority.certificate.subject:
        return True
    try:
        certificate.verify_directly_issued_by(authority.certificate)
    except (ValueError, TypeError, InvalidSignature):
        return True  # an earlier authority of the same name
    return certificate.not_valid_after_utc - now < REISSUE_BEFORE


def certificate_names(certificate: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    try:
        extension = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except x509.ExtensionNotFound:
        return []
    san = extension.value
    return [
        *san.get_values_for_type(x509.DNSName),
        *(str(a) for a in san.get_values_for_type(x509.IPAddress)),
    ]


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(item: ec.EllipticCurvePrivateKey | x509.Certificate) -> bytes:
    if isinstance(item, x509.Certificate):
        return item.public_bytes(serialization.Encoding.PEM)
    return item.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise _unwritable(directory, error) from None


@contextlib.contextmanager
def _private_temp(directory: Path, data: bytes) -> Iterator[Path]:
    """A temporary file in ``directory`` readable by the user only, removed
    afterwards unless it was renamed."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pem")
    except OSError as error:
        raise _unwritable(directory, error) from None
    try:
        with os.fdopen(fd, "wb") as file:  # mkstemp makes it 0600
            file.write(data)
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _unwritable(directory: Path, error: OSError) -> TLSSetupError:
    reason = error.strerror or str(error)
    return TLSSetupError(
        f"Cannot write the certificate authority to {directory} ({reason}); "
        f"set {CA_DIR_ENV} to a directory you can write."
    )


def _owner() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no name for this uid (some containers)
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return f"{user}@{local_hostname()}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)
