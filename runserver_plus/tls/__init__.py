"""HTTPS for development: certificates, the TLS context and trust in them."""

from __future__ import annotations


class TLSSetupError(Exception):
    """A certificate, key or certificate authority directory that cannot be
    used; the message is one line, for the command to show as it is."""
