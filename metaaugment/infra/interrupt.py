"""Ctrl-C stops a run within a couple of seconds, whatever the main thread is doing.

Python runs a signal handler only between bytecodes of the main thread: a process inside a
long C call (a ResNet-50 step on a CPU, a DataLoader shutting its workers down, a machine
paging) raises `KeyboardInterrupt` only when the call returns, seconds or minutes later.
`stop_within` arranges that the first SIGINT (or SIGTERM, where it raises as SIGINT does) is
also seen by a watchdog thread, through `signal.set_wakeup_fd` (written by the C-level
handler the moment the signal arrives). The main thread unwinds as usual; if the process
is still alive `grace_s` later, the watchdog waits for any atomic file write in progress
(`metaaugment.infra.files` counts them, so a checkpoint is never cut), calls `on_deadline`
(the "interrupted: rerun with --resume" line, unless the main thread printed it and is stuck
shutting down) and ends the process with exit code 130.
Nothing is lost that a normal Ctrl-C keeps: checkpoints are written atomically, and the run
folder's lock is an `flock` the operating system releases with the process.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Callable

INTERRUPTED = 130
GRACE_S = 1.5
WRITE_WAIT_S = 30.0  # a checkpoint in the middle of being written is finished first
REARM_AFTER_S = 0.05  # a swallowed Ctrl-C is raised again once its hook has returned

_writes_in_progress = 0
_writes_lock = threading.Lock()
_exiting = threading.Event()


class AtomicWrite:
    """Context manager marking a file write the watchdog must not cut (nested use is fine)."""

    def __enter__(self) -> None:
        global _writes_in_progress
        with _writes_lock:
            _writes_in_progress += 1

    def __exit__(self, *exc: object) -> None:
        global _writes_in_progress
        with _writes_lock:
            _writes_in_progress -= 1


def _writing() -> bool:
    with _writes_lock:
        return _writes_in_progress > 0


def finishing() -> bool:
    """Claim the right to print the closing line: True once, for the main thread or the watchdog."""
    with _writes_lock:
        if _exiting.is_set():
            return False
        _exiting.set()
        return True


def stop_within(on_deadline: Callable[[], None], grace_s: float = GRACE_S) -> bool:
    """Start the watchdog (main thread only; False elsewhere, or when another wakeup fd is set).

    `on_deadline()` runs on the watchdog thread just before the forced exit; the main thread
    calls `finishing()` before printing its own closing line, so the line is printed once."""
    if threading.current_thread() is not threading.main_thread():
        return False
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except ValueError:
        os.close(read_end), os.close(write_end)
        return False
    if previous != -1:  # someone else's wakeup fd (an event loop): leave theirs in place
        signal.set_wakeup_fd(previous)
        os.close(read_end), os.close(write_end)
        return False
    stops = {int(signal.SIGINT)}
    if signal.getsignal(signal.SIGTERM) is signal.default_int_handler:
        stops.add(int(signal.SIGTERM))

    def watch() -> None:
        while True:
            received = os.read(read_end, 64)
            if not received or stops & set(received):
                break
        time.sleep(grace_s)  # a process that exits normally by then never gets here (daemon thread)
        waited = time.monotonic()
        while _writing() and time.monotonic() - waited < WRITE_WAIT_S:
            time.sleep(0.02)
        try:
            if finishing():  # else the main thread printed the line and is stuck shutting down
                on_deadline()
            sys.stderr.flush()
            sys.stdout.flush()
        finally:
            os._exit(INTERRUPTED)

    threading.Thread(target=watch, name="metaaug-interrupt-watchdog", daemon=True).start()
    redeliver_swallowed_interrupts()
    return True


def redeliver_swallowed_interrupts() -> None:
    """Raise again, in the main thread, a Ctrl-C that Python could only report as "ignored".

    A SIGINT landing in a hook Python cannot raise from (the logging module's after-fork lock
    release while a DataLoader starts its workers, a `__del__`) is printed as "Exception ignored
    in ..." with a traceback, and the interrupt is lost. This hook re-arms it instead
    (`_thread.interrupt_main`, 50 ms later), so the main thread unwinds at its next bytecode as after any
    Ctrl-C; every other unraisable exception goes to the hook that was there before."""
    import _thread

    previous = sys.unraisablehook
    if getattr(previous, "redelivers_interrupts", False):
        return

    def rearm() -> None:
        time.sleep(REARM_AFTER_S)
        _thread.interrupt_main()

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            # from another thread, a moment later: armed here, the interrupt would be raised
            # inside this hook (at its next bytecode) and be "ignored" once more
            threading.Thread(target=rearm, name="metaaug-interrupt-rearm", daemon=True).start()
            return
        previous(unraisable)

    hook.redelivers_interrupts = True
    sys.unraisablehook = hook
