"""Progress on long steps: a rich bar with percentage and ETA on a terminal, plain periodic lines
otherwise (logs, CI, pipes), and a one-time note when numba compiles a kernel.

Everything goes to stderr, so a command's ``--json`` line on stdout stays the last stdout line.

    from bot.progress import progress, compile_notice

    with progress("estimating the liquidation map", total=len(chunks)) as bar:
        for chunk in chunks:
            work(chunk)
            bar.advance()

    with compile_notice():          # prints "compiling ... (first run only)" only on a cache miss
        run_numba_kernel(...)
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any, TypeVar

T = TypeVar("T")


def _fmt_seconds(seconds: float) -> str:
    """``7 s``, ``2 min 05 s``, ``1 h 02 min``."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class PlainProgress:
    """Progress as plain lines: at most one every ``interval`` seconds (and at each 25 %), then a
    final ``done`` line. Used when the stream is not a terminal."""

    def __init__(self, description: str, total: float | None, stream: IO[str], interval: float = 5.0,
                 clock: Any = time.monotonic) -> None:
        self.description, self.total, self.stream, self.interval = description, total, stream, interval
        self.clock = clock
        self.completed = 0.0
        self.started = clock()
        self._last_line = self.started
        self._last_quarter = 0

    def line(self) -> str:
        """The current status as one line (percentage and ETA when the total is known)."""
        elapsed = self.clock() - self.started
        if not self.total:
            return f"{self.description}: {self.completed:,.0f} done, {_fmt_seconds(elapsed)} elapsed"
        frac = min(self.completed / self.total, 1.0)
        eta = elapsed * (1.0 - frac) / frac if frac > 0 else float("nan")
        eta_text = _fmt_seconds(eta) if eta == eta else "?"
        return (f"{self.description}: {frac * 100:3.0f} % ({self.completed:,.0f}/{self.total:,.0f}), "
                f"{_fmt_seconds(elapsed)} elapsed, ETA {eta_text}")

    def update(self, completed: float) -> None:
        """Set the amount done; print a line when due."""
        self.completed = completed
        now = self.clock()
        quarter = int(4 * completed / self.total) if self.total else 0
        if now - self._last_line >= self.interval or (quarter > self._last_quarter and quarter < 4):
            self._last_line, self._last_quarter = now, max(quarter, self._last_quarter)
            print(self.line(), file=self.stream, flush=True)

    def advance(self, amount: float = 1.0) -> None:
        """Add ``amount`` to the amount done."""
        self.update(self.completed + amount)

    def finish(self) -> None:
        print(f"{self.description}: done in {_fmt_seconds(self.clock() - self.started)}", file=self.stream,
              flush=True)


class _RichProgress:
    """The same two methods over a rich progress task."""

    def __init__(self, bar: Any, task: Any) -> None:
        self._bar, self._task = bar, task

    def update(self, completed: float) -> None:
        self._bar.update(self._task, completed=completed)

    def advance(self, amount: float = 1.0) -> None:
        self._bar.advance(self._task, amount)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress(description: str, total: float | None, *, stream: IO[str] | None = None,
             interval: float = 5.0) -> Iterator[PlainProgress | _RichProgress]:
    """A progress reporter for one long step; call ``.advance(n)`` or ``.update(done)`` on it.

    On a terminal: a rich bar with percentage, elapsed time and ETA (cleared at the end, leaving
    one ``done`` line). Elsewhere: :class:`PlainProgress` lines every ``interval`` seconds.
    """
    out = stream if stream is not None else sys.stderr
    if not _is_terminal(out):
        plain = PlainProgress(description, total, out, interval)
        yield plain
        plain.finish()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(file=out)
    started = time.monotonic()
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield _RichProgress(bar, task)
    console.print(f"{description}: done in {_fmt_seconds(time.monotonic() - started)}", highlight=False)


def track(items: Iterable[T], description: str, total: int | None = None, **kwargs: Any) -> Iterator[T]:
    """Iterate ``items`` with a :func:`progress` bar advanced once per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(description, total, **kwargs) as bar:
        for item in items:
            yield item
            bar.advance()


_NOTICES: list[dict[str, bool]] = []
"""The compile notices active now, outermost first: only the innermost prints, once for them all."""


class _WhenImported(importlib.abc.MetaPathFinder):
    """Calls ``callback`` right after module ``name`` has been imported (removes itself on first use).

    Lets `compile_notice` listen to numba without importing it: a backtest that runs the
    precompiled kernel never loads numba, and importing it only to listen costs ~0.4 s.
    """

    def __init__(self, name: str, callback: Callable[[], None]) -> None:
        self.name, self.callback = name, callback

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        self.remove()
        spec = importlib.util.find_spec(fullname)  # what the other finders would have answered
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenCall(spec.loader, self.callback)
        return spec

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


class _ThenCall(importlib.abc.Loader):
    """A loader that runs ``loader`` and then ``callback``."""

    def __init__(self, loader: Any, callback: Callable[[], None]) -> None:
        self.loader, self.callback = loader, callback

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        self.callback()


@contextmanager
def compile_notice(what: str = "numba kernels", *, stream: IO[str] | None = None) -> Iterator[None]:
    """Print ``compiling <what> (first run only) …`` once if numba compiles inside the block.

    numba fires its ``numba:compile`` event only on a real compilation, not when it loads a
    kernel from its on-disk cache, so the note appears on the first run after an install or a
    code change and never after. Nested notices print one line: the innermost (most specific)
    one's, and only the first time anything compiles inside the outermost block. numba is not
    imported here: the listener is installed when something inside the block imports numba.
    """
    out = stream if stream is not None else sys.stderr
    listening: list[Any] = []

    def listen() -> None:
        from numba.core import event

        class _Notice(event.Listener):
            def on_start(self, ev: Any) -> None:
                if not state["shown"] and _NOTICES and _NOTICES[-1] is state:
                    for notice in _NOTICES:
                        notice["shown"] = True
                    print(f"compiling {what} (first run only; later runs load numba's cache) …", file=out,
                          flush=True)

            def on_end(self, ev: Any) -> None:
                pass

        listener = _Notice()
        event.register("numba:compile", listener)
        listening.append((event, listener))

    state = {"shown": bool(_NOTICES and _NOTICES[0]["shown"])}
    _NOTICES.append(state)
    watcher = None
    if "numba" in sys.modules:
        listen()
    else:
        watcher = _WhenImported("numba", listen)
        sys.meta_path.insert(0, watcher)
    try:
        yield
    finally:
        _NOTICES.remove(state)
        if watcher is not None:
            watcher.remove()
        for event, listener in listening:
            event.unregister("numba:compile", listener)
