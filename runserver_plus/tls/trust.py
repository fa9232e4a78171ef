"""Whether clients trust our certificate, and the steps that make them trust it."""

from __future__ import annotations

import dataclasses
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

from runserver_plus.tls.context import server_context

#: Rounds of an in-memory handshake: TLS 1.2 needs two, 1.3 one and a half.
_HANDSHAKE_ROUNDS = 8


def looks_trusted(cert_file: str, key_file: str = "") -> bool:
    """Whether a client using the system's trust store accepts the certificate.

    Python's ``ssl.create_default_context()`` loads that store (OpenSSL's on
    Linux, which Debian's ``update-ca-certificates`` and Fedora's
    ``update-ca-trust`` fill; the Windows root store on Windows); a TLS
    handshake between it and our server context, in memory, verifies the
    chain exactly as a client would (the host name aside). On macOS the
    Keychain is what browsers use, so ``security verify-cert`` is asked too.
    """
    server = server_context(cert_file, key_file)
    client = ssl.create_default_context()
    client.check_hostname = False
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(to_client, to_server)
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    done = False
    for _ in range(_HANDSHAKE_ROUNDS):
        try:
            client_side.do_handshake()
            done = True
        except ssl.SSLCertVerificationError:
            return False
        except ssl.SSLWantReadError:
            pass
        try:
            server_side.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            return False  # the server saw the client's alert
        if done:
            return True
    return sys.platform == "darwin" and _keychain_trusts(cert_file)


def _keychain_trusts(cert_file: str) -> bool:  # pragma: no cover - macOS only
    security = shutil.which("security")
    if security is None:
        return False
    result = subprocess.run(
        [security, "verify-cert", "-c", cert_file, "-p", "ssl"],
        capture_output=True,
        check=False,
        timeout=10,
    )
    return result.returncode == 0


@dataclasses.dataclass(frozen=True)
class Step:
    """One command that makes a trust store trust the certificate authority."""

    title: str
    argv: tuple[str, ...]

    @property
    def shell(self) -> str:
        return " ".join(_quote(a) for a in self.argv)


def _quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_./:,=@+%" for c in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def instructions(ca_file: Path, nickname: str, platform: str = sys.platform) -> str:
    """The steps, as text, that trust ``ca_file`` on ``platform``."""
    ca = str(ca_file)
    name = nickname
    if platform == "darwin":
        return "\n".join(
            [
                "macOS (Safari, Chrome and Edge use the Keychain):",
                "  sudo security add-trusted-cert -d -r trustRoot "
                f"-k /Library/Keychains/System.keychain {_quote(ca)}",
                "Firefox keeps its own store: in about:config set "
                "security.enterprise_roots.enabled to true, or import the file in",
                "  Settings > Privacy & Security > Certificates > View Certificates "
                "> Authorities > Import.",
            ]
        )
    if platform == "win32":
        return "\n".join(
            [
                "Windows (Edge, Chrome and Python use the root store of your user; "
                "Windows asks you to confirm):",
                f"  certutil -user -addstore Root {_quote(ca)}",
                "or in PowerShell:",
                f"  Import-Certificate -FilePath {_quote(ca)} "
                "-CertStoreLocation Cert:\\CurrentUser\\Root",
                "Firefox: set security.enterprise_roots.enabled to true in "
                "about:config.",
            ]
        )
    file_name = _store_name(name)
    lines = [
        "Debian and Ubuntu (the system store: curl, Python, Go, ...):",
        f"  sudo cp {_quote(ca)} /usr/local/share/ca-certificates/{file_name}.crt",
        "  sudo update-ca-certificates",
        "Fedora, RHEL and CentOS:",
        f"  sudo cp {_quote(ca)} /etc/pki/ca-trust/source/anchors/{file_name}.pem",
        "  sudo update-ca-trust",
        "Chromium, Chrome and Firefox on Linux use NSS databases instead, one for "
        "Chromium and one per Firefox profile ('certutil' is in Debian's "
        "libnss3-tools, Fedora's nss-tools):",
        f"  certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n {_quote(name)} "
        f"-i {_quote(ca)}",
        "  for p in ~/.mozilla/firefox/*/ ~/snap/firefox/common/.mozilla/firefox/*/; "
        f'do [ -f "$p/cert9.db" ] && certutil -d "sql:$p" -A -t C,, '
        f"-n {_quote(name)} -i {_quote(ca)}; done",
        "Restart the browsers afterwards.",
    ]
    return "\n".join(lines)


def _store_name(nickname: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in nickname)


_CHROMIUM_BINARIES = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
)
_FIREFOX_PROFILES = (".mozilla/firefox/*/", "snap/firefox/common/.mozilla/firefox/*/")


def linux_steps(ca_file: Path, nickname: str, home: Path) -> list[Step]:
    """The steps of ``instructions()`` that this Linux machine can perform:
    the system store whose tool is installed, and each NSS database found
    (Chromium's is created when missing and Chromium or Chrome is installed)."""
    ca = str(ca_file)
    sudo: tuple[str, ...] = ()
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        sudo = ("sudo",) if shutil.which("sudo") else ()
    steps: list[Step] = []
    file_name = _store_name(nickname)
    update_debian = shutil.which("update-ca-certificates")
    update_fedora = shutil.which("update-ca-trust")
    if update_debian and Path("/usr/local/share/ca-certificates").is_dir():
        target = f"/usr/local/share/ca-certificates/{file_name}.crt"
        steps.append(Step("Debian's system store", (*sudo, "cp", ca, target)))
        steps.append(Step("Debian's system store", (*sudo, update_debian)))
    elif update_fedora and Path("/etc/pki/ca-trust/source/anchors").is_dir():
        target = f"/etc/pki/ca-trust/source/anchors/{file_name}.pem"
        steps.append(Step("Fedora's system store", (*sudo, "cp", ca, target)))
        steps.append(Step("Fedora's system store", (*sudo, update_fedora, "extract")))
    certutil = shutil.which("certutil")
    if certutil is None:
        return steps
    chromium_db = home / ".pki" / "nssdb"
    has_chromium = any(shutil.which(browser) for browser in _CHROMIUM_BINARIES)
    databases: list[Path] = []
    if (chromium_db / "cert9.db").exists():
        databases.append(chromium_db)
    elif has_chromium:
        steps.append(
            Step("Chromium's NSS database (new)", ("mkdir", "-p", str(chromium_db)))
        )
        steps.append(
            Step(
                "Chromium's NSS database (new)",
                (certutil, "-d", f"sql:{chromium_db}", "-N", "--empty-password"),
            )
        )
        databases.append(chromium_db)
    for pattern in _FIREFOX_PROFILES:
        databases.extend(
            p for p in sorted(home.glob(pattern)) if (p / "cert9.db").exists()
        )
    for database in databases:
        add = (certutil, "-d", f"sql:{database}", "-A", "-t", "C,,", "-n", nickname)
        steps.append(Step(f"NSS database {database}", (*add, "-i", ca)))
    return steps


def perform(steps: list[Step]) -> list[tuple[Step, int]]:
    """Run the steps in order; each with its exit status. Stops at a failure."""
    results = []
    for step in steps:
        code = subprocess.run(step.argv, check=False).returncode
        results.append((step, code))
        if code != 0:
            break
    return results
