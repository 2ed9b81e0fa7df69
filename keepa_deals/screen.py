"""What ``keepa-deals up`` prints: whole lines, flushed one by one (a pipe or a log file gets each
line as it is printed), from several threads, and never an exception when the reader has gone.

A reader that went away (``| head -1``, a ``| tee`` interrupted by Ctrl-C, a closed terminal) is
noticed both on write (EPIPE, EIO) and without writing (:func:`keepa_deals.lifeline.output_closed`):
the launcher then stops the stack, and what is still printed goes to ``/dev/null`` instead of
raising at every line and at interpreter exit.
"""

from __future__ import annotations

import os
import threading

from keepa_deals.lifeline import output_closed


class Screen:
    def __init__(self, stream):
        self._stream = stream
        self._fd = stream.fileno()
        self._lock = threading.Lock()
        self._gone = False

    def line(self, text: str) -> None:
        with self._lock:
            if self._gone:
                return
            try:
                self._stream.write(text.rstrip("\n") + "\n")
                self._stream.flush()
            except OSError:  # EPIPE (SIGPIPE is ignored by Python), EIO from a hung-up terminal
                self._let_go()

    @property
    def closed(self) -> bool:
        """True once nobody reads what is printed."""
        with self._lock:
            if not self._gone and output_closed(self._fd):
                self._let_go()
            return self._gone

    def _let_go(self) -> None:
        self._gone = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._fd)  # buffered bytes and later prints now go nowhere, silently
        os.close(devnull)
