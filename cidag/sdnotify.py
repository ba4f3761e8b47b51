"""sd_notify(3) without libsystemd: tell systemd a Type=notify service's state.

`cidag run` under `cidag.service` (Type=notify) says READY=1 when the ready
milestone is reached (docs/systemd.md), and STATUS= lines as milestones pass.
Outside systemd (no $NOTIFY_SOCKET) every call does nothing.
"""
from __future__ import annotations

import os
import socket


class Notifier:
    """The service manager's notification socket, taken out of the environment once
    so that the commands cidag runs cannot speak for it."""

    def __init__(self, address: str | None = None) -> None:
        if address is None:
            address = os.environ.pop("NOTIFY_SOCKET", None)
        self.address = address or None
        self.ready_sent = False

    def notify(self, **fields: str) -> bool:
        """Send KEY=value lines (e.g. READY="1", STATUS="..."); False when it could not be sent."""
        if not self.address:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]  # an abstract socket
        elif not addr.startswith("/"):
            return False  # vsock: and other forms are not for a service's main process
        text = "".join(f"{k}={str(v).replace(chr(10), ' ')}\n" for k, v in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(addr)
                sock.sendall(text.encode())
        except OSError:
            return False  # systemd went away or the socket is not ours: nothing to tell
        return True

    def ready(self, status: str) -> None:
        """READY=1 once (later calls only update the status)."""
        if self.ready_sent:
            self.notify(STATUS=status)
            return
        self.ready_sent = self.notify(READY="1", STATUS=status) or self.ready_sent
