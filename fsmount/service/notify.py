"""The systemd notify protocol (sd_notify): one datagram to $NOTIFY_SOCKET, no libsystemd needed."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*states: str) -> bool:
    """Send 'READY=1', 'STOPPING=1', 'STATUS=...' to systemd; False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(states).encode())
        return True
    except OSError as e:
        log.warning("could not notify systemd at %s: %s", address, e)
        return False
