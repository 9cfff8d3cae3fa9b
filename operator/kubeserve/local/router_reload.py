"""Swap the local router's config while it serves: test it, put it in place, reload, wait.

nginx reloads on SIGHUP: the master reads its config file again and, when it is valid, starts
new workers with it and tells the old ones to stop accepting and to finish the requests they
serve. The listening sockets are the master's and stay open throughout, so no connection is
refused and no request in flight is cut. The master says nothing when it refuses a config
(the old workers keep serving, a line goes to its log), so the config is tested first
(`nginx -t`); and the reload is done when the master's children (read from /proc) are new
workers only: from then on every connection meets the new config. Where there is no /proc
the wait is a fixed pause.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

# Old workers finish their requests first; a model's answer takes milliseconds, and one that
# takes longer only delays the "reloaded" line, not the new config.
RELOAD_TIMEOUT = 10.0
NO_PROC_PAUSE = 1.0


class ReloadError(Exception):
    """The new config was refused, or the master did not start workers with it."""


def _children_file(pid: int) -> set[int] | None:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return None
    return {int(p) for p in text.split()}


def _children_scan(pid: int) -> set[int] | None:
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    found: set[int] = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone since the listing
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after it.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.add(int(entry.name))
    return found


def workers(master: int) -> set[int] | None:
    """Give the pids of the nginx master's children (its workers); None where /proc is absent."""
    children = _children_file(master)
    return children if children is not None else _children_scan(master)


class LiveRouter:
    """A running nginx master (started with `-c conf -p prefix`) and the config it serves."""

    def __init__(self, *, nginx: str, conf: Path, prefix: Path, master: int, text: str) -> None:
        self.nginx = nginx
        self.conf = conf
        self.prefix = prefix
        self.master = master
        self.text = text

    def test(self, path: Path) -> None:
        """Have nginx check a config file; raise ReloadError with its complaint."""
        result = subprocess.run(
            [self.nginx, "-t", "-q", "-c", str(path), "-p", str(self.prefix), "-e", "stderr"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ReloadError(f"nginx refused the new config: {result.stderr.strip()}")

    def apply(self, text: str, *, timeout: float = RELOAD_TIMEOUT) -> bool:
        """Serve `text` from now on; False when it is what serves already.

        Returns once the new workers serve (the old ones may still finish a long request:
        they no longer take any). Raises ReloadError when nginx refuses the config (the old
        one keeps serving) or no new worker starts within `timeout`.
        """
        if text == self.text:
            return False
        candidate = self.conf.with_name(f"{self.conf.name}.next")
        candidate.write_text(text)
        try:
            self.test(candidate)
        except ReloadError:
            candidate.unlink(missing_ok=True)
            raise
        before = workers(self.master)
        os.replace(candidate, self.conf)
        os.kill(self.master, signal.SIGHUP)
        self.text = text
        if before is None:
            time.sleep(NO_PROC_PAUSE)
            return True
        deadline = time.monotonic() + timeout
        while True:
            now = workers(self.master) or set()
            started, left = now - before, now & before
            if started and not left:
                return True
            if time.monotonic() >= deadline:
                if started:
                    return True  # old workers still finishing a request; they take no new ones
                raise ReloadError(
                    f"nginx started no worker with the new config within {timeout:.0f}s "
                    "(see the router's log); the old config still serves"
                )
            time.sleep(0.01)
