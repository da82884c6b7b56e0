"""Stopping a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (a scheduler, or torchrun forwarding either).

:class:`StopSignals` turns the first such signal into a request that the loop reads between steps: it finishes the
step in flight, checkpoints it and exits with 128 + the signal's number (130, 143), as a shell reports a process
the signal ended. A second signal means "now": the process exits at once with that code. Checkpoints are written
atomically, so what is on disk stays complete; a torn temporary file is removed at the next start.
"""

from __future__ import annotations

import os
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    """The exit status of a process stopped by ``signum``, as shells report it: 128 + its number."""
    return 128 + signum


def signal_name(signum: int) -> str:
    """``SIGINT``, ``SIGTERM``, ...: the name of a signal number."""
    return signal.Signals(signum).name


class Interrupted(Exception):
    """Training stopped on a signal after checkpointing step ``step`` at ``checkpoint``; the process should exit
    with :attr:`exit_code`."""

    def __init__(self, step: int, signum: int, checkpoint):
        super().__init__(f"interrupted at step {step} ({signal_name(signum)}); checkpoint written to {checkpoint}; "
                         "run the same command to resume")  # fmt: skip
        self.step, self.signum, self.checkpoint = step, signum, checkpoint

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


class StopSignals:
    """Between :meth:`install` and :meth:`restore`, SIGINT and SIGTERM set :attr:`signum` (the first one's number)
    instead of raising KeyboardInterrupt or ending the process; a second one exits the process at once.

    Installed only in the main thread, the one place Python lets a handler be set (elsewhere the signals keep their
    handlers and :attr:`signum` stays None); :meth:`restore` puts the previous handlers back."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in SIGNALS}

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            # None: a handler set outside Python, which cannot be put back; the default is the nearest
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
            return
        # os.write, not print: a handler may run in the middle of another print to the same stream
        os.write(2, f"softdiff.train: second {signal_name(signum)}; exiting at once\n".encode())
        os._exit(exit_code(signum))
