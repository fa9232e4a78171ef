"""What --https and --trust ask of the command: the files to serve, the trust steps."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.management.base import CommandError

from runserver_plus import banner, project
from runserver_plus.config import WILDCARD_ADDRESSES

if TYPE_CHECKING:
    from runserver_plus.tls.files import TLSFiles


def tls_files(options: dict[str, Any], addr: str, *, ipv6: bool) -> TLSFiles | None:
    """The files to serve HTTPS with (None for plain HTTP), each problem with
    them a one-line ``CommandError``."""
    cert_file = options.get("cert_file") or ""
    key_file = options.get("key_file") or ""
    if key_file and not cert_file:
        raise CommandError("--key-file goes with --cert-file.")
    wanted = options.get("https") or getattr(settings, "RUNSERVER_PLUS_HTTPS", False)
    if not (wanted or cert_file):
        return None
    # Imported only for HTTPS: cryptography takes a while to import.
    from runserver_plus.tls import TLSSetupError, authority, files  # noqa: PLC0415

    try:
        if cert_file:
            return files.user_files(cert_file, key_file)
        wildcard = addr in WILDCARD_ADDRESSES
        extra = banner.reachable_addresses(ipv6) if wildcard else [addr]
        names = authority.server_names(authority.local_hostname(), extra)
        return files.local_files(project.ca_dir(), names)
    except TLSSetupError as error:
        raise CommandError(str(error)) from None


def trust(options: dict[str, Any], write: Callable[[str], None]) -> None:
    """``--trust``: where the certificate authority is and how to trust it;
    with ``--install``, on Linux, do it."""
    from runserver_plus.tls import TLSSetupError, authority  # noqa: PLC0415
    from runserver_plus.tls import trust as steps_for  # noqa: PLC0415

    if options.get("install") and not options.get("trust"):
        raise CommandError("--install goes with --trust.")
    try:
        ca = authority.load_or_create_authority(project.ca_dir())
    except TLSSetupError as error:
        raise CommandError(str(error)) from None
    nickname = ca.common_name
    write(
        f"The local certificate authority of runserver --https is\n"
        f"  {ca.cert_path}\n"
        "Nothing trusts it until you say so. To trust it:\n\n"
        + steps_for.instructions(ca.cert_path, nickname)
    )
    if not options.get("install"):
        return
    if not sys.platform.startswith("linux"):
        raise CommandError("--install works on Linux only: follow the steps above.")
    steps = steps_for.linux_steps(ca.cert_path, nickname, Path.home())
    if not steps:
        raise CommandError(
            "--install found no update-ca-certificates, update-ca-trust or "
            "certutil to run: follow the steps above."
        )
    write("\nPerforming the steps for this machine:")
    for step, code in steps_for.perform(steps):
        write(f"  {step.title}: {step.shell}")
        if code != 0:
            raise CommandError(f"{step.shell} failed with exit code {code}.")
    write("Done; restart the browsers.")
