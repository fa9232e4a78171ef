"""What the banner adds to Django's: the addresses of a wildcard bind, and colours."""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
from collections.abc import Iterable
from typing import Any, TextIO, cast

from django.core.management.base import OutputWrapper


def enable_windows_colours() -> None:
    """Let Windows consoles render ANSI colours (a no-op elsewhere)."""
    if sys.platform == "win32":  # pragma: no cover - not tested on these machines
        import colorama  # noqa: PLC0415

        colorama.just_fix_windows_console()


_SIOCGIFADDR = 0x8915  # Linux ioctl: the IPv4 address of an interface


def _linux_ipv4_addresses() -> Iterable[str]:
    import fcntl  # noqa: PLC0415 - POSIX only

    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:  # pragma: no cover - platforms without if_nameindex
        return
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for name in names:
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
            except OSError:
                continue  # interface without an IPv4 address
            yield socket.inet_ntoa(answer[20:24])


def _linux_ipv6_addresses() -> Iterable[str]:
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as table:
            for line in table:
                raw = line.split()[0]
                yield str(ipaddress.IPv6Address(bytes.fromhex(raw)))
    except OSError:  # pragma: no cover - no IPv6 or not Linux
        return


def _resolved_addresses(family: socket.AddressFamily) -> Iterable[str]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, family)
    except OSError:
        return
    for info in infos:
        yield str(info[4][0])


def reachable_addresses(ipv6: bool) -> list[str]:
    """Addresses of this machine a wildcard-bound server can be reached at.

    Loopback first, then the others sorted; link-local IPv6 addresses are left
    out because a browser needs a zone id to use them.
    """
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    found: set[str] = set(_resolved_addresses(family))
    if sys.platform.startswith("linux"):
        found.update(_linux_ipv6_addresses() if ipv6 else _linux_ipv4_addresses())
    found.add("::1" if ipv6 else "127.0.0.1")
    addresses = [ipaddress.ip_address(a.split("%")[0]) for a in found]
    usable = [a for a in addresses if not a.is_link_local]
    return [str(a) for a in sorted(set(usable), key=lambda a: (not a.is_loopback, a))]


def wildcard_banner(ipv6: bool, port: int, scheme: str = "http") -> str:
    """The extra banner lines for a server bound to every interface."""
    lines = ["The server listens on every interface; it can be reached at:"]
    for address in reachable_addresses(ipv6):
        host = f"[{address}]" if ":" in address else address
        lines.append(f"  {scheme}://{host}:{port}/")
    return "\n".join(lines)


WILDCARD_WARNING = (
    "WARNING: Other machines on your network can reach this server. With "
    "DEBUG=True they see tracebacks and settings on error pages; bind to "
    "127.0.0.1 unless you need this."
)


def trust_line(*, trusted: bool, local_ca: str) -> str:
    """The banner's HTTPS line: does this system trust what the server presents?"""
    if local_ca:
        if trusted:
            return f"HTTPS: the local certificate authority {local_ca} is trusted."
        return (
            f"HTTPS: the local certificate authority {local_ca} is not trusted by "
            "this system, so browsers will warn; `manage.py runserver --trust` "
            "says how to trust it."
        )
    if trusted:
        return "HTTPS: the certificate is trusted by this system."
    return (
        "HTTPS: the certificate is not trusted by this system, so browsers will warn."
    )


class FlushingOutput(OutputWrapper):
    """Django's output wrapper, flushed on every write so the banner shows at
    once in CI logs and ``docker logs`` (Django's is block-buffered there)."""

    def write(  # type: ignore[override]  # OutputWrapper's own signature
        self, msg: str = "", style_func: Any = None, ending: str | None = None
    ) -> None:
        super().write(msg, style_func, ending)
        self.flush()


def flushing(
    wrapper: OutputWrapper, kind: type[FlushingOutput] = FlushingOutput
) -> OutputWrapper:
    """``wrapper`` (a command's ``stdout`` or ``stderr``) as a ``kind``."""
    output = kind(cast(TextIO, wrapper._out), wrapper.ending)
    output.style_func = wrapper.style_func
    return output
