"""CPU time of a group of processes, read from ``/proc``: a server and all its workers.

The image benchmark runs server and load generator on the same two cores, so what each
spends per request says how near a point is to what the machine allows (see
``run_image_bench.measure``).
"""

from __future__ import annotations

import os
import pathlib
import resource


def group_cpu(pgid: int) -> float:
    """CPU seconds used so far by the live processes of group ``pgid``."""
    total = 0
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            # After the command's ")": state, ppid, pgrp, ..., utime (12th), stime (13th).
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone between the listing and the read
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds of this process's finished children: the load generators run so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
