"""The certificate authority, server certificates, the user's files and trust."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509

from runserver_plus.tls import TLSSetupError
from runserver_plus.tls.authority import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    REISSUE_BEFORE,
    SERVER_VALIDITY,
    certificate_names,
    default_ca_dir,
    load_or_create_authority,
    server_certificate,
    server_names,
)
from runserver_plus.tls.context import server_context
from runserver_plus.tls.files import local_files, user_files
from runserver_plus.tls.trust import instructions, linux_steps, looks_trusted
from tests.certs import make_nss_db, user_pair

TIMEOUT = 10.0  # s, per socket operation


# --- where the authority lives ------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "environ", "expected"),
    [
        ("linux", {"HOME": "/h"}, "/h/.local/share/runserver_plus/ca"),
        ("linux", {"HOME": "/h", "XDG_DATA_HOME": "/x"}, "/x/runserver_plus/ca"),
        ("darwin", {"HOME": "/h"}, "/h/Library/Application Support/runserver_plus/ca"),
        ("win32", {"HOME": "/h", "LOCALAPPDATA": "/l"}, "/l/runserver_plus/ca"),
        ("linux", {"HOME": "/h", "RUNSERVER_PLUS_CA_DIR": "/o"}, "/o"),
    ],
)
def test_the_authority_lives_in_the_users_data_directory(platform, environ, expected):
    assert default_ca_dir(environ, platform) == Path(expected)


# --- the authority --------------------------------------------------------------------


def test_the_authority_is_made_once_with_a_private_key(tmp_path):
    directory = tmp_path / "deep" / "ca"
    first = load_or_create_authority(directory)
    key_file = directory / CA_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / CA_CERT_FILE).stat().st_mode) == 0o644
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    before = key_file.stat()
    second = load_or_create_authority(directory)
    assert second.certificate == first.certificate
    assert (key_file.stat().st_ino, key_file.stat().st_mtime_ns) == (
        before.st_ino,
        before.st_mtime_ns,
    )
    constraints = first.certificate.extensions.get_extension_for_class(
        x509.BasicConstraints
    )
    assert constraints.value.ca is True
    assert set(os.listdir(directory)) == {CA_CERT_FILE, CA_KEY_FILE}


def test_a_missing_public_certificate_is_written_again(tmp_path):
    authority = load_or_create_authority(tmp_path / "ca")
    authority.cert_path.unlink()
    again = load_or_create_authority(tmp_path / "ca")
    assert x509.load_pem_x509_certificate(again.cert_path.read_bytes()) == (
        authority.certificate
    )


def test_a_directory_that_cannot_be_made_is_one_clear_error(tmp_path):
    # Root ignores permission bits; a regular file in the path stops anyone.
    (tmp_path / "file").write_text("")
    with pytest.raises(TLSSetupError, match=r"^Cannot write the certificate authority"):
        load_or_create_authority(tmp_path / "file" / "ca")


def test_a_damaged_authority_is_one_clear_error(tmp_path):
    directory = tmp_path / "ca"
    directory.mkdir()
    (directory / CA_KEY_FILE).write_text("not a key")
    with pytest.raises(TLSSetupError, match=r"cannot be loaded.*remove"):
        load_or_create_authority(directory)


# --- server certificates -------------------------------------------------------------


def test_server_names_are_local_names_then_host_then_lan():
    assert server_names("Box", ["192.168.1.5", "127.0.0.1"]) == (
        "localhost",
        "127.0.0.1",
        "::1",
        "box",
        "192.168.1.5",
    )


def test_a_server_certificate_is_reused_until_its_names_change(tmp_path):
    authority = load_or_create_authority(tmp_path / "ca")
    names = server_names("box", ["10.1.2.3"])
    path = server_certificate(authority, names)
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    assert sorted(certificate_names(certificate)) == sorted(names)
    certificate.verify_directly_issued_by(authority.certificate)
    mtime = path.stat().st_mtime_ns
    assert server_certificate(authority, names) == path
    assert path.stat().st_mtime_ns == mtime
    other = server_certificate(authority, server_names("box", ["10.1.2.4"]))
    assert other != path
    assert "10.1.2.4" in certificate_names(
        x509.load_pem_x509_certificate(other.read_bytes())
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_server_certificate_is_reissued_when_its_end_is_near(tmp_path):
    authority = load_or_create_authority(tmp_path / "ca")
    names = server_names("box")
    path = server_certificate(authority, names)
    first = x509.load_pem_x509_certificate(path.read_bytes())
    still_fine = first.not_valid_after_utc - REISSUE_BEFORE - datetime.timedelta(1)
    server_certificate(authority, names, now=still_fine)
    assert x509.load_pem_x509_certificate(path.read_bytes()) == first
    near_end = first.not_valid_after_utc - REISSUE_BEFORE + datetime.timedelta(1)
    server_certificate(authority, names, now=near_end)
    second = x509.load_pem_x509_certificate(path.read_bytes())
    assert second != first
    assert second.not_valid_after_utc - near_end == SERVER_VALIDITY


def test_a_new_authority_reissues_the_server_certificate(tmp_path):
    directory = tmp_path / "ca"
    names = server_names("box")
    old = x509.load_pem_x509_certificate(
        server_certificate(load_or_create_authority(directory), names).read_bytes()
    )
    (directory / CA_KEY_FILE).unlink()
    authority = load_or_create_authority(directory)
    path = server_certificate(authority, names)
    new = x509.load_pem_x509_certificate(path.read_bytes())
    assert new != old
    new.verify_directly_issued_by(authority.certificate)


def _handshake(context: ssl.SSLContext, client: ssl.SSLContext, name: str) -> str:
    """A real TLS handshake over loopback; returns the protocol version."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        errors: list[BaseException] = []

        def serve() -> None:
            conn, _ = listener.accept()
            conn.settimeout(TIMEOUT)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError) as error:
                errors.append(error)
            finally:
                conn.close()

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            raw = socket.create_connection(listener.getsockname(), TIMEOUT)
            with client.wrap_socket(raw, server_hostname=name) as tls:
                version = tls.version()
                tls.sendall(b"x")
        finally:
            thread.join(TIMEOUT)
        assert version is not None
        return version


def test_every_name_verifies_with_the_authoritys_file(tmp_path):
    files = local_files(tmp_path / "ca", server_names("box.example", ["10.9.8.7"]))
    context = server_context(files.cert_file)
    client = ssl.create_default_context(cafile=files.ca_file)
    for name in server_names("box.example", ["10.9.8.7"]):
        assert _handshake(context, client, name) in {"TLSv1.2", "TLSv1.3"}
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(context, client, "other.example")
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local"):
        _handshake(context, ssl.create_default_context(), "localhost")


def test_the_context_refuses_tls_1_1(tmp_path):
    files = local_files(tmp_path / "ca", server_names("box"))
    client = ssl.create_default_context(cafile=files.ca_file)
    with pytest.warns(DeprecationWarning, match="TLSv1_1"):
        client.minimum_version = client.maximum_version = ssl.TLSVersion.TLSv1_1
    client.set_ciphers("ALL:@SECLEVEL=0")
    # The client offers TLS 1.1; the server's alert names the version.
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        _handshake(server_context(files.cert_file), client, "localhost")
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _handshake(server_context(files.cert_file), client, "localhost") == (
        "TLSv1.2"
    )


# --- the user's files ---------------------------------------------------------------


def test_the_users_pair_is_accepted(tmp_path):
    cert, key = user_pair(tmp_path)
    files = user_files(str(cert), str(key))
    assert (files.cert_file, files.key_file, files.warnings) == (
        str(cert),
        str(key),
        (),
    )
    server_context(files.cert_file, files.key_file)


def test_a_key_in_the_certificates_file_is_enough(tmp_path):
    cert, key = user_pair(tmp_path)
    both = tmp_path / "both.pem"
    both.write_bytes(key.read_bytes() + cert.read_bytes())
    assert user_files(str(both)).key_file == ""


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing cert", r"^The certificate file \S+nowhere.pem does not exist\.$"),
        ("missing key", r"^The key file \S+nowhere.pem does not exist\.$"),
        ("no key", r"^\S+user-cert.pem holds no PEM private key; pass the key with"),
        ("not pem", r"^The certificate file \S+ holds no PEM certificate\.$"),
        ("mismatch", r"^The key in \S+other-key.pem does not match the certificate"),
        ("passphrase", r"^The key in \S+ is protected by a passphrase"),
        ("bad key", r"^The key in \S+ cannot be loaded"),
    ],
)
def test_bad_user_files_are_one_line_errors(tmp_path, case, message):
    cert, key = user_pair(
        tmp_path, passphrase=b"secret" if case == "passphrase" else None
    )
    _, other_key = user_pair(tmp_path, stem="other")
    nowhere = str(tmp_path / "nowhere.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text(
        "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"
    )
    args = {
        "missing cert": (nowhere, str(key)),
        "missing key": (str(cert), nowhere),
        "no key": (str(cert), ""),
        "not pem": (str(key), ""),
        "mismatch": (str(cert), str(other_key)),
        "passphrase": (str(cert), str(key)),
        "bad key": (str(cert), str(junk)),
    }[case]
    with pytest.raises(TLSSetupError, match=message) as error:
        user_files(*args)
    assert "\n" not in str(error.value)


def test_an_expired_certificate_is_a_warning(tmp_path):
    cert, key = user_pair(tmp_path, expired=True)
    (warning,) = user_files(str(cert), str(key)).warnings
    assert "expired on" in warning
    assert "browsers will warn" in warning


# --- trust --------------------------------------------------------------------------


def test_the_authority_is_not_trusted_by_the_system_store(tmp_path):
    files = local_files(tmp_path / "ca", server_names("box"))
    assert looks_trusted(files.cert_file) is False


def test_the_authority_in_the_system_store_is_trusted(tmp_path, monkeypatch):
    files = local_files(tmp_path / "ca", server_names("box"))
    # OpenSSL's default store, which ssl.create_default_context() loads, is
    # the file SSL_CERT_FILE names: a system store holding only our authority.
    monkeypatch.setenv("SSL_CERT_FILE", files.ca_file)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "none"))
    assert looks_trusted(files.cert_file) is True


def test_the_users_certificate_is_checked_the_same_way(tmp_path, monkeypatch):
    cert, key = user_pair(tmp_path)
    assert looks_trusted(str(cert), str(key)) is False
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "none"))
    assert looks_trusted(str(cert), str(key)) is True


@pytest.mark.parametrize(
    ("platform", "words"),
    [
        ("darwin", ["security add-trusted-cert", "System.keychain", "Firefox"]),
        ("win32", ["certutil -user -addstore Root", "Cert:\\CurrentUser\\Root"]),
        (
            "linux",
            [
                "/usr/local/share/ca-certificates/",
                "update-ca-certificates",
                "/etc/pki/ca-trust/source/anchors/",
                "update-ca-trust",
                "sql:$HOME/.pki/nssdb",
                ".mozilla/firefox",
            ],
        ),
    ],
)
def test_instructions_name_the_file_and_each_store(tmp_path, platform, words):
    ca = tmp_path / "ca.pem"
    text = instructions(ca, "runserver_plus CA me@box", platform)
    assert str(ca) in text
    for word in words:
        assert word in text


def test_linux_steps_cover_each_nss_database_found(tmp_path, nss_only_path):
    home = tmp_path / "home"
    make_nss_db(nss_only_path, home / ".pki" / "nssdb")
    make_nss_db(nss_only_path, home / ".mozilla" / "firefox" / "abc.default")
    (home / ".mozilla" / "firefox" / "no-db.profile").mkdir()
    steps = linux_steps(tmp_path / "ca.pem", "runserver_plus CA me@box", home)
    databases = [s.argv[2] for s in steps]
    assert databases == [
        f"sql:{home / '.pki' / 'nssdb'}",
        f"sql:{home / '.mozilla' / 'firefox' / 'abc.default'}",
    ]
    assert all(s.argv[3:7] == ("-A", "-t", "C,,", "-n") for s in steps)
