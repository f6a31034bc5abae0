"""The exit codes a command chooses; those of a finished run (0, 1, 3, 5, 130, 143) are
``RunSummary.exit_code``. 70, 74, 75 and 78 are sysexits.h's EX_SOFTWARE, EX_IOERR, EX_TEMPFAIL
and EX_CONFIG (a proxy that refuses the run: the network's settings need fixing)."""

from __future__ import annotations

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_CONFIG",
    "EXIT_FATAL",
    "EXIT_INTERRUPTED",
    "EXIT_IO",
    "EXIT_OK",
    "EXIT_OUTAGE",
    "EXIT_SOFTWARE",
    "EXIT_USAGE",
]

EXIT_OK, EXIT_USAGE, EXIT_FATAL, EXIT_INTERRUPTED = 0, 2, 4, 130
EXIT_SOFTWARE, EXIT_IO, EXIT_OUTAGE, EXIT_CONFIG, EXIT_BROKEN_PIPE = 70, 74, 75, 78, 141
