"""SIGINT and SIGTERM as clean exits: ``interrupted``, exit 130/143, temporary output removed.

:func:`install` (called by ``cascade``'s ``main()``) makes SIGTERM raise :class:`Interrupted` in
the main thread, the way SIGINT raises ``KeyboardInterrupt`` (both ``BaseException``); they unwind through the
``finally``/``except BaseException`` blocks of :mod:`bot.atomic`, which delete their temporaries.

A signal that arrives while a numba kernel runs cannot be delivered inside it (compiled code does
not check), and an exception raised as the kernel returns surfaces as ``SystemError: CPUDispatcher
... returned a result with an exception set``. Wrap kernel calls in :func:`deferred`: a signal
inside the block is remembered and raised when the block ends, i.e. *between* kernel calls;
:func:`check` raises a pending one at any safe point of a long loop.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class Interrupted(BaseException):
    """Raised on SIGTERM (also when deferred, by :func:`check`); carries the exit code."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM


_state = threading.local()
_pending: list[int] = []


def _deferring() -> int:
    return getattr(_state, "depth", 0)


def _handler(signum: int, frame: FrameType | None) -> None:
    if _deferring():
        _pending.append(signum)
        return
    _raise(signum)


def _raise(signum: int) -> None:
    # SIGINT stays a KeyboardInterrupt (commands may catch it to stop, typer exits 130 on it);
    # SIGTERM is Interrupted, which nothing but main() catches
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(signum)


def install() -> None:
    """Route SIGINT and SIGTERM through :func:`_handler` (main thread only; no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def check() -> None:
    """Raise a signal that arrived while deferred (call between kernel calls)."""
    if _pending and not _deferring():
        signum = _pending.pop(0)
        _pending.clear()
        _raise(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends (wrap each numba kernel call)."""
    _state.depth = _deferring() + 1
    try:
        yield
    finally:
        _state.depth -= 1
    check()


def exit_code_for(err: BaseException) -> int | None:
    """Exit code for an interrupt (also a numba ``SystemError`` caused by one), else ``None``."""
    if isinstance(err, Interrupted):
        return err.exit_code
    if isinstance(err, KeyboardInterrupt):
        return EXIT_SIGINT
    if isinstance(err, SystemError):
        cause = err.__cause__ or err.__context__
        if cause is not None:
            return exit_code_for(cause)
    return None
