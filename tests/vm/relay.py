"""QEMU guestfwd helper: one guest connection on stdin/stdout, relayed to HOST PORT on the host.

QEMU starts one of these per connection (`guestfwd=...-cmd:`), so the guest can
open as many connections to 169.254.169.254:80 as it likes.
"""
import os
import selectors
import socket
import sys


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    try:
        upstream = socket.create_connection((host, port), timeout=10)
    except OSError:
        return 1
    upstream.settimeout(None)
    sel = selectors.DefaultSelector()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sel.register(stdin, selectors.EVENT_READ)
    sel.register(upstream, selectors.EVENT_READ)
    open_ends = 2
    while open_ends:
        for key, _ in sel.select():
            if key.fileobj == stdin:
                data = os.read(stdin, 65536)
                if data:
                    upstream.sendall(data)
                else:
                    sel.unregister(stdin)
                    upstream.shutdown(socket.SHUT_WR)
                    open_ends -= 1
            else:
                data = upstream.recv(65536)
                if data:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(stdout, view):]
                else:
                    sel.unregister(upstream)
                    os.close(stdout)
                    open_ends -= 1
                    open_ends = 0  # the service closed: the guest's connection ends too
    return 0


if __name__ == "__main__":
    sys.exit(main())
