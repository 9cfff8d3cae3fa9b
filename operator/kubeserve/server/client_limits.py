"""What one client may hold of the server, and the record of connections cut for it.

The transport (``http``) enforces these; ``serve`` fills them from the configuration. Each
limit answers one kind of hostile or broken client that docs/transport.md lists with the
test that pins it down.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging

log = logging.getLogger("kubeserve.server")

# Dropped-connection warnings: the first at once, the rest summed up this often.
DROP_LOG_EVERY = 10.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What one client may take from the server: connections, time and unsent replies.

    Every timeout of 0 turns that check off.
    """

    max_connections: int = 900
    idle_timeout: float = 60.0  # silence, between requests or within one
    header_timeout: float = 10.0  # from a request's first byte to its blank line
    body_timeout: float = 10.0  # a body's allowance, plus one second per body_min_rate bytes
    body_min_rate: float = 16384.0  # bytes/s; 0 makes body_timeout a plain deadline
    send_timeout: float = 30.0  # replies stuck above the high-water mark this long: drop


DEFAULTS = Limits()


class Drop(enum.StrEnum):
    """Why the server closed a connection that the client did not close."""

    IDLE = "idle_timeout"
    HEADER = "header_timeout"
    BODY = "body_timeout"
    SEND = "send_timeout"
    FULL = "max_connections"
    DRAIN = "drain_timeout"

    @property
    def flag(self) -> str:
        """The ``kubeserve serve`` flag that sets the limit behind this reason."""
        return "--" + self.value.replace("_", "-")


class DropLog:
    """Log dropped connections without letting a flood of them flood the log."""

    def __init__(self) -> None:
        self.quiet_until = 0.0
        self.pending: collections.Counter[str] = collections.Counter()

    def note(self, reason: Drop, message: str, now: float) -> None:
        """Warn now if the log has been quiet for a while, else count it for ``flush``."""
        if now >= self.quiet_until:
            log.warning("%s", message)
            self.quiet_until = now + DROP_LOG_EVERY
        else:
            self.pending[reason.value] += 1

    def flush(self, now: float) -> None:
        """Warn with the counts noted since the last warning, once the quiet time is over."""
        if self.pending and now >= self.quiet_until:
            counts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.pending.items()))
            log.warning("also dropped in the last %gs: %s", DROP_LOG_EVERY, counts)
            self.pending.clear()
            self.quiet_until = now + DROP_LOG_EVERY
