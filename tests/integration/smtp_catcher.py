"""A loopback SMTP server for tests: the least SMTP a client needs (RFC 5321 replies), holding
each message's DATA. `catcher(on_data=...)` starts one on a free port; `on_data(text)` runs when
a message has arrived, before the reply, and returns the reply line (default "250 queued"), so a
test can check the database at that moment, refuse the message, or hold the sender there."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


class SmtpCatcher(socketserver.StreamRequestHandler):
    received: list[str] = []
    on_data: Callable[[str], str | None] | None = None

    def handle(self) -> None:
        self.wfile.write(b"220 localhost test SMTP\r\n")
        while line := self.rfile.readline():
            verb = line.decode().strip().split(" ")[0].upper()
            if verb == "DATA":
                self.wfile.write(b"354 end with <CRLF>.<CRLF>\r\n")
                data = []
                while (part := self.rfile.readline()) not in (b".\r\n", b""):
                    data.append(part.decode())
                text = "".join(data)
                hook = type(self).on_data
                reply = (hook(text) if hook else None) or "250 queued"
                if reply.startswith("250"):
                    self.received.append(text)
                self.wfile.write(reply.encode() + b"\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@dataclass
class Catcher:
    port: int
    received: list[str] = field(default_factory=list)


@contextmanager
def catcher(on_data: Callable[[str], str | None] | None = None) -> Iterator[Catcher]:
    """A running catcher with its own state (a handler class of its own)."""
    received: list[str] = []
    handler = type(
        "Handler",
        (SmtpCatcher,),
        {"received": received, "on_data": staticmethod(on_data) if on_data else None},
    )
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Catcher(server.server_address[1], received)
    finally:
        server.shutdown()
        server.server_close()
