"""Tier 2: --https, --cert-file/--key-file and --trust through the command."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from django.core.management.base import CommandError

from runserver_plus.tls.authority import CA_CERT_FILE, certificate_names
from tests.certs import make_nss_db, user_pair
from tests.command.test_command import RecordingCommand, config_for, run

TIMEOUT = 10.0  # s, for the thread that prints the trust line


def served_names(cert_file: str) -> list[str]:
    return certificate_names(
        x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    )


def test_plain_http_by_default():
    config = config_for()
    assert (config.https, config.tls_cert, config.scheme) == (False, "", "http")


def test_https_uses_a_certificate_from_the_local_authority(ca_dir):
    config = config_for("--https")
    assert config.https is True
    assert config.url == "https://127.0.0.1"
    assert config.tls_ca == str(ca_dir / CA_CERT_FILE)
    assert Path(config.tls_cert).parent == ca_dir
    assert config.tls_key == ""
    names = served_names(config.tls_cert)
    for name in ("localhost", "127.0.0.1", "::1", socket.gethostname().lower()):
        assert name in names


def test_the_setting_turns_https_on(settings):
    settings.RUNSERVER_PLUS_HTTPS = True
    assert config_for().https is True


def test_the_ca_dir_setting_is_used_without_the_environment(
    settings, monkeypatch, tmp_path
):
    monkeypatch.delenv("RUNSERVER_PLUS_CA_DIR")
    settings.RUNSERVER_PLUS_CA_DIR = str(tmp_path / "from-settings")
    assert config_for("--https").tls_ca == str(tmp_path / "from-settings" / "ca.pem")


def test_a_wildcard_address_adds_the_lan_addresses_the_banner_lists(settings):
    from runserver_plus.banner import reachable_addresses

    names = served_names(config_for("--https", "0.0.0.0:8000").tls_cert)
    for address in reachable_addresses(ipv6=False):
        assert address in names


def test_a_named_address_is_in_the_certificate():
    names = served_names(config_for("--https", "box.test:8000").tls_cert)
    assert "box.test" in names


def test_the_users_files_are_used_as_given(tmp_path):
    cert, key = user_pair(tmp_path)
    config = config_for("--cert-file", str(cert), "--key-file", str(key))
    assert (config.https, config.tls_cert, config.tls_key, config.tls_ca) == (
        True,
        str(cert),
        str(key),
        "",
    )


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", r"^The certificate file \S+ does not exist\.$"),
        ("mismatch", r"^The key in \S+ does not match the certificate in \S+\.$"),
        ("passphrase", r"^The key in \S+ is protected by a passphrase"),
        ("key alone", r"^--key-file goes with --cert-file\.$"),
        ("unwritable", r"^Cannot write the certificate authority to \S+ \(.*\); set "),
    ],
)
def test_bad_input_is_a_one_line_command_error(tmp_path, monkeypatch, case, message):
    cert, key = user_pair(tmp_path, passphrase=b"pw" if case == "passphrase" else None)
    _, other_key = user_pair(tmp_path, stem="other")
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("RUNSERVER_PLUS_CA_DIR", str(tmp_path / "file" / "ca"))
    args = {
        "missing": ("--cert-file", str(tmp_path / "nope.pem")),
        "mismatch": ("--cert-file", str(cert), "--key-file", str(other_key)),
        "passphrase": ("--cert-file", str(cert), "--key-file", str(key)),
        "key alone": ("--https", "--key-file", str(key)),
        "unwritable": ("--https",),
    }[case]
    with pytest.raises(CommandError, match=message) as error:
        run(*args)
    assert "\n" not in str(error.value)


def announced(command: RecordingCommand, port: int) -> None:
    """``announce()``, and the trust line it prints from a thread."""
    command.announce(port)
    assert command.trust_reported is not None
    command.trust_reported.join(TIMEOUT)
    assert not command.trust_reported.is_alive()


# Django 6 names its server "WSGI development server"; before, without "WSGI".
@pytest.mark.parametrize(
    ("mode", "banner"),
    [("--wsgi", " development"), ("--asgi", "Starting ASGI development")],
)
def test_the_banner_prints_https_urls_and_the_trust_line(ca_dir, mode, banner):
    command = run("--https", mode, "127.0.0.1:0")
    announced(command, 43210)
    out = command.stdout._out.getvalue()  # type: ignore[attr-defined]
    assert f"{banner} server at https://127.0.0.1:43210/\n" in out
    assert (
        f"HTTPS: the local certificate authority {ca_dir / CA_CERT_FILE} is not "
        "trusted by this system, so browsers will warn;" in out
    )


def test_the_trust_line_says_trusted_when_the_system_store_has_it(
    ca_dir, monkeypatch, tmp_path
):
    command = run("--https", "0.0.0.0:8000")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_dir / CA_CERT_FILE))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "none"))
    announced(command, 8000)
    out = command.stdout._out.getvalue()  # type: ignore[attr-defined]
    assert "  https://127.0.0.1:8000/" in out
    assert (
        f"HTTPS: the local certificate authority {ca_dir / CA_CERT_FILE} is trusted.\n"
        in out
    )


def test_an_expired_certificate_is_a_warning_in_the_banner(tmp_path):
    cert, key = user_pair(tmp_path, expired=True)
    command = run("--cert-file", str(cert), "--key-file", str(key))
    announced(command, 8000)
    err = command.stderr._out.getvalue()  # type: ignore[attr-defined]
    assert f"WARNING: The certificate in {cert} expired on " in err
    out = command.stdout._out.getvalue()  # type: ignore[attr-defined]
    assert "HTTPS: the certificate is not trusted by this system" in out


def trust(*args: str) -> str:
    import io

    from django.core.management import call_command

    from runserver_plus.management.commands.runserver import StaticfilesCommand

    out = io.StringIO()
    command = StaticfilesCommand(stdout=out, stderr=io.StringIO())
    call_command(command, "--trust", *args)
    return out.getvalue()


def test_trust_prints_the_authority_and_the_steps(ca_dir):
    out = trust()
    assert f"  {ca_dir / CA_CERT_FILE}\n" in out
    assert "update-ca-certificates" in out
    assert "certutil -d sql:$HOME/.pki/nssdb" in out
    assert (ca_dir / CA_CERT_FILE).is_file()


def test_trust_install_fills_the_nss_databases(
    ca_dir,
    tmp_path,
    monkeypatch,
    nss_only_path,
):
    home = tmp_path / "home"
    chromium_db = home / ".pki" / "nssdb"
    make_nss_db(nss_only_path, chromium_db)
    monkeypatch.setenv("HOME", str(home))
    out = trust("--install")
    assert f"NSS database {chromium_db}: " in out
    listing = subprocess.run(
        [nss_only_path, "-d", f"sql:{chromium_db}", "-L"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert "runserver_plus CA" in listing
    assert "C,," in listing


def test_trust_install_with_nothing_to_run_is_a_command_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CommandError, match=r"found no update-ca-certificates"):
        trust("--install")


def test_install_alone_is_a_command_error():
    with pytest.raises(CommandError, match=r"^--install goes with --trust\.$"):
        run("--install")


def test_help_lists_the_https_options():
    text = RecordingCommand().create_parser("manage.py", "runserver").format_help()
    for option in ("--https", "--cert-file", "--key-file", "--trust", "--install"):
        assert option in text
