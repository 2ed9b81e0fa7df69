"""Every process ``keepa-deals up`` starts ends when ``up`` ends, however ``up`` ends.

``up`` puts its pid in the environment of everything it starts (``KEEPA_DEALS_UP_PID``); the
variable is inherited through honcho, the shell it runs and ``supervise``. Each keepa-deals process
that finds it (see :func:`follow_up`, called by the console script) does two things:

- it watches ``up`` itself through a pidfd (Linux 5.3+): when ``up`` is gone, even SIGKILLed, the
  process sends itself SIGTERM, so it stops the way it stops when asked (workers drain);
- it asks the kernel for SIGTERM when its own parent dies (``PR_SET_PDEATHSIG``), so each level of
  a chain (honcho, supervise, the role) also follows the level above it.

Processes we cannot change (redis-server, honcho) get ``PR_SET_PDEATHSIG`` between fork and exec
(:func:`die_with_parent`). The kernel sends it when the parent *thread* that forked them ends, so
only the main thread of a process may start them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
import signal
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

UP_PID_VARIABLE = "KEEPA_DEALS_UP_PID"
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None


def _set_pdeathsig(signum: int) -> bool:
    return _libc is not None and _libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0


def die_with_parent(signum: int = signal.SIGTERM):
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``signum`` when the calling thread
    ends. If the parent is already gone when the child gets there, the child gets it at once."""
    parent = os.getpid()

    def in_child() -> None:
        _set_pdeathsig(signum)
        if os.getppid() != parent:
            os.kill(os.getpid(), signum)

    return in_child


def stop_on_signals(signals=(signal.SIGTERM, signal.SIGINT), then=None) -> threading.Event:
    """An event set when one of ``signals`` arrives; ``then(signum)`` runs on each, off the handler.

    The handler only writes the signal's number to a pipe; a thread sets the event. Setting an
    ``Event`` inside a handler takes its lock, and a second signal arriving meanwhile (honcho
    signals a whole process group, ``supervise`` forwards, a parent dies: three SIGTERMs within a
    millisecond are common here) or the main thread holding that lock when the first arrives
    deadlocks the process for good: it then hangs until something SIGKILLs it."""
    stop = threading.Event()
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def on_signal(signum, _frame):
        with contextlib.suppress(OSError):  # a full pipe: plenty of signals are on their way already
            os.write(write_end, bytes([signum]))

    def relay():
        while True:
            for signum in os.read(read_end, 64):
                if then is not None:
                    then(signum)
                stop.set()

    threading.Thread(target=relay, name="stop-signals", daemon=True).start()
    for signum in signals:
        signal.signal(signum, on_signal)
    return stop


def follow_up(environ=os.environ) -> bool:
    """Stop (SIGTERM to ourselves) when the ``up`` that started us, or our parent, is gone.

    Does nothing outside ``up`` (no ``KEEPA_DEALS_UP_PID``). True when a watch was started."""
    raw = environ.get(UP_PID_VARIABLE, "")
    if not raw.isdigit() or int(raw) == os.getpid():
        return False
    parent = os.getppid()
    _set_pdeathsig(signal.SIGTERM)
    if os.getppid() != parent:  # our parent ended before the kernel was asked
        os.kill(os.getpid(), signal.SIGTERM)
    up_pid = int(raw)
    if parent == up_pid:  # `up` is our parent: the parent-death signal alone says it ended
        return True
    try:
        pidfd = os.pidfd_open(up_pid)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGTERM)  # `up` ended before we started: stop now
        return True
    except (AttributeError, OSError):  # no pidfd here: the parent-death signal alone
        return False
    threading.Thread(target=_stop_when_readable, args=(pidfd, up_pid), name="lifeline", daemon=True).start()
    return True


def _stop_when_readable(pidfd: int, up_pid: int) -> None:
    select.select([pidfd], [], [])  # a pidfd becomes readable when its process has ended
    log.warning("keepa-deals up (pid %d) is gone: stopping", up_pid)
    os.kill(os.getpid(), signal.SIGTERM)


def output_closed(fd: int) -> bool:
    """True when nobody can read what we write to ``fd`` any more: the reader of a pipe went away
    (``| head -1``, ``| tee`` interrupted) or the terminal hung up. Never blocks."""
    poller = select.poll()
    poller.register(fd, 0)  # errors and hang-ups are always reported
    return any(ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _, ev in poller.poll(0))


def started_by(up_pid: int) -> list[int]:
    """Processes still alive whose environment says ``up_pid`` started them (Linux ``/proc``)."""
    needle = f"{UP_PID_VARIABLE}={up_pid}\0".encode()
    found: list[int] = []
    if not Path("/proc").is_dir():  # not Linux: the watches above are all there is
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == up_pid:
            continue
        try:
            if needle in (entry / "environ").read_bytes() and not _zombie(entry):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _zombie(entry: Path) -> bool:
    stat = (entry / "stat").read_text()
    return stat[stat.rindex(")") + 2] == "Z"
