"""The server's TLS context, made in the process that serves."""

from __future__ import annotations

import ssl


def server_context(cert_file: str, key_file: str = "") -> ssl.SSLContext:
    """A TLS 1.2+ server context serving ``cert_file`` (and ``key_file``,
    empty when the key is in the certificate's file), speaking HTTP/1.1."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file or None)
    context.set_alpn_protocols(["http/1.1"])
    return context
