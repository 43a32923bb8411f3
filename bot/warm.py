"""Warm start: a background process that has cascade imported forks one worker per command.

Importing Python, pandas, pyarrow, typer, pydantic and rich takes about 0.6 s on a 2-core machine,
more than a year of 5m bars takes to load, backtest and write. For the short commands users run
over and over (:data:`WARM_COMMANDS`) the ``cascade`` executable therefore asks a *warm server*
to run them: a process of the same Python, the same ``sys.path``, the same source files and the
same import-relevant environment, which has already imported the command modules. It forks; the
child takes the caller's stdin/stdout/stderr (passed as file descriptors), working directory,
environment, umask and arguments, runs ``bot.cli.main`` exactly as the caller would have, and the
caller exits with the child's status. The caller stays in the foreground and forwards the
signals it gets (Ctrl-C, SIGTERM, SIGHUP, Ctrl-Z and ``fg``, …) to the child; if the caller dies,
the server stops the child. Each run is a fresh fork: nothing one command does is seen by the next.

Without a server the command runs in its own process as before, and starts one in the background
for the next command; a server exits after ``CASCADE_WARM_IDLE`` seconds (default 600) without a
request. ``CASCADE_WARM=0`` turns warm start off; ``cascade warm`` lists the servers and
``cascade warm --stop`` stops them.

The server answers on a Linux abstract UNIX socket named after a hash of what the imports depend
on (:func:`identity`): the interpreter and its flags, ``sys.path``, the size and modification time
of every cascade source file and of the ``site-packages`` folders (an install or upgrade changes
those), the resource limits (a server inherits them from the caller that started it), and the
environment variables read at import time (``PYTHON*``, ``CASCADE_*``, ``ARROW_*``, ``NUMBA_*``,
``NUMPY_*``, ``PANDAS_*``, typer's, thread-pool and locale variables). Any change gives another
name, so a stale server is never asked; a user runs at most :data:`MAX_SERVERS`. Both ends check
the other's user id (``SO_PEERCRED``): a socket squatted by another user is neither served nor used.

This module imports only the standard library at module level: it is what the executable loads
before deciding where to run.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WARM_COMMANDS = frozenset({"backtest", "liqmap", "strategies"})
DEFAULT_IDLE_S = 600.0
PACKAGES = ("bot", "backtests", "strategies")
# what the server imports before it serves: the warm commands and what they import when they run
PRELOAD = (
    "bot.cli", "bot.commands.backtest", "bot.commands.liqmap", "bot.commands.strategies",
    "backtests.runner", "backtests.metrics", "backtests.engines", "backtests.engines.compiled",
    "backtests.report.trades", "backtests.report.html", "bot.data", "bot.store", "bot.validation",
    "bot.progress", "bot.risk.brackets", "bot.risk.params", "strategies.base", "strategies.loader",
    "strategies.liq_asymmetry", "strategies.funding_reversal", "strategies.sr_levels", "strategies.confluence",
    "pyarrow.csv", "pyarrow.parquet", "pyarrow.pandas_compat", "pandas.io.formats.csvs",
    "pydantic.dataclasses", "rich.live", "rich.status", "rich.table",
)
_ENV_PREFIXES = ("PYTHON", "CASCADE_", "ARROW_", "PYARROW_", "NUMBA_", "NUMPY_", "PANDAS_", "TYPER_", "_TYPER",
                 "OMP_", "OPENBLAS_", "MKL_", "LD_", "LC_")
_ENV_NAMES = frozenset({"TZ", "LANG", "HOME", "XDG_CACHE_HOME"})
_LIMITS = ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CPU", "RLIMIT_CORE", "RLIMIT_STACK")
_HEADER = struct.Struct("!I")
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
              signal.SIGWINCH, signal.SIGCONT)
MAX_SERVERS = 4  # per user: a fifth identity (another checkout, folder or environment) runs cold
_SOCKET_PREFIX = "cascade-warm-"


# -- Identity: which server may run this process's command ------------------------------------


def enabled(env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Warm start is on unless ``CASCADE_WARM`` is 0/false/no/off (Linux only: abstract sockets)."""
    return sys.platform.startswith("linux") and env.get("CASCADE_WARM", "1").strip().lower() not in {
        "0", "false", "no", "off"}


def wanted(argv: list[str]) -> bool:
    """Whether ``cascade argv…`` should run in a warm server."""
    return bool(argv) and argv[0] in WARM_COMMANDS and enabled() and not _interpreter_options()


def _interpreter_options() -> bool:
    """True when Python itself got options (``python -X dev -m bot``): a server would not have them."""
    orig = list(getattr(sys, "orig_argv", []))[1:]
    if sys._xoptions or sys.warnoptions:
        return True
    return bool(orig) and orig[0].startswith("-") and orig[0] not in {"-m", "-c"}


def source_files(roots: Iterable[Path]) -> Iterator[Path]:
    """Every ``.py`` file under ``roots`` (``__pycache__`` skipped), in a stable order."""
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            for name in sorted(files):
                if name.endswith(".py"):
                    yield Path(folder, name)


def identity(env: dict[str, str] | os._Environ[str] = os.environ, path: list[str] | None = None) -> str:
    """The hash a warm server must share with this process to run its command (module docstring)."""
    import hashlib
    import resource

    path = absolute_path(sys.path if path is None else path)
    digest = hashlib.sha256()
    limits = [resource.getrlimit(getattr(resource, name)) for name in _LIMITS]  # inherited by the server
    parts: list[Any] = [sys.executable, sys.version, tuple(sys.flags), sys.warnoptions, path, os.getuid(), limits]
    parts.append(sorted((k, v) for k, v in env.items() if k.startswith(_ENV_PREFIXES) or k in _ENV_NAMES))
    for folder in path:  # an install, upgrade or removal renames entries there (not a working folder)
        if os.path.basename(folder) in ("site-packages", "dist-packages"):
            try:
                parts.append((folder, os.stat(folder).st_mtime_ns))
            except OSError:
                parts.append((folder, None))
    digest.update(json.dumps(parts, default=str).encode())
    for file in source_files(_package_roots()):
        st = file.stat()
        digest.update(f"{file}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def absolute_path(entries: list[str]) -> list[str]:
    """``sys.path`` with ``''`` and relative folders made absolute (path-hook names stay as they are)."""
    out = []
    for entry in entries:
        if entry == "":
            entry = os.getcwd()
        elif not os.path.isabs(entry) and os.path.isdir(entry):
            entry = os.path.abspath(entry)
        out.append(entry)
    return out


def _package_roots() -> list[Path]:
    here = Path(__file__).resolve().parent.parent
    return [here / p for p in PACKAGES if (here / p).is_dir()]


def socket_name(key: str) -> str:
    """The abstract socket name of the server for ``key`` (a leading NUL: not in the filesystem)."""
    return f"\0{_SOCKET_PREFIX}{os.getuid()}-{key}"


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


# -- The client: what the ``cascade`` executable does -----------------------------------------


def connect(key: str) -> socket.socket | None:
    """A connection to the warm server for ``key``, or None when none runs (or it is not ours)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(socket_name(key))
        if _peer_uid(sock) != os.getuid():
            raise OSError("warm server of another user")
    except OSError:
        sock.close()
        return None
    return sock


def _send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    payload = json.dumps(message).encode()
    data = _HEADER.pack(len(payload)) + payload
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sent = sock.sendmsg([data], ancillary)
    if sent < len(data):  # (never send an empty rest: the server may have answered and closed already)
        sock.sendall(data[sent:])


class _Replies:
    """The server's replies on ``sock``: one JSON object per line.

    Read in short timeouts, so that Python runs every signal handler promptly. A blocking ``recv``
    that is retried in C after EINTR would sleep past a signal that arrived while another handler
    ran, for example a Ctrl-C right after ``fg``.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        sock.settimeout(0.2)

    def next(self, timeout: float | None) -> dict[str, Any] | None:
        """The next reply; None when the server closed the connection. ``TimeoutError`` after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                if deadline is not None and time.monotonic() > deadline:
                    raise
                continue
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


def _stdio() -> list[dict[str, Any]] | None:
    """How this process's stdin/stdout/stderr are set up, so the worker's are the same (None: closed)."""
    out = []
    for fd, stream in ((0, sys.stdin), (1, sys.stdout), (2, sys.stderr)):
        try:
            os.fstat(fd)
        except OSError:
            return None
        if stream is None:
            return None
        out.append({"encoding": getattr(stream, "encoding", None) or "utf-8",
                    "errors": getattr(stream, "errors", None) or "strict",
                    "line_buffering": bool(getattr(stream, "line_buffering", False)),
                    "write_through": bool(getattr(stream, "write_through", False))})
    return out


def run_remote(sock: socket.socket, argv: list[str]) -> int | None:
    """Run ``cascade argv…`` in the server behind ``sock``; its exit status, or None if it did not start.

    A negative status is the signal that killed the worker (the caller dies of the same signal).
    """
    stdio = _stdio()
    if stdio is None:
        return None
    main = sys.modules.get("__main__")
    request = {"argv": [sys.argv[0], *argv], "cwd": os.getcwd(), "env": dict(os.environ),
               "umask": _umask(), "stdio": stdio, "main_package": getattr(main, "__package__", None)}
    try:
        _send(sock, request, [0, 1, 2])
        replies = _Replies(sock)
        first = replies.next(120.0)  # a server that has just started may still be importing
    except (OSError, ValueError):
        return None
    except KeyboardInterrupt:  # Ctrl-C before the command started: the server drops it (we hang up)
        print("interrupted", file=sys.stderr)
        return 130
    if not first or "pid" not in first:
        return None
    pid = int(first["pid"])
    previous = {sig: signal.signal(sig, lambda signum, _frame: _forward(pid, signum)) for sig in _FORWARDED}
    previous[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, lambda _signum, _frame: _suspend(pid))
    try:
        while (reply := replies.next(None)) is not None:
            if "exit" in reply:
                return int(reply["exit"])
    except (OSError, ValueError):
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("error: the warm server stopped before the command finished; run it again, or set CASCADE_WARM=0",
          file=sys.stderr)
    return 1


_stopped: list[bool] = [False]  # the worker was stopped by our Ctrl-Z and not resumed yet


def _forward(pid: int, signum: int) -> None:
    """Send ``signum`` to the worker's process group, resuming the group first after a Ctrl-Z.

    A signal that reaches a stopped (or just resumed) process may be taken by any of its threads
    when they wake, not by the main thread, which alone runs Python's handlers and is asleep in a
    system call that then resumes as if nothing happened: the Ctrl-C would be lost. Python runs
    pending handlers in signal-number order, so a Ctrl-C (or bash's SIGTERM for ``kill %1``) that
    comes with fg's SIGCONT is handled here first. So after a Ctrl-Z the group is resumed first
    and given a moment to settle back into its calls before the signal is sent.
    """
    if _stopped[0] and signum not in (signal.SIGTSTP, signal.SIGCONT):
        _stopped[0] = False
        _killpg(pid, signal.SIGCONT)
        time.sleep(0.1)
    elif signum == signal.SIGCONT:
        _stopped[0] = False
    _killpg(pid, signum)


def _killpg(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except OSError:
        pass


def _suspend(pid: int) -> None:
    """Ctrl-Z: stop the worker's group, then this process (``fg`` resumes both: :func:`_forward`)."""
    _forward(pid, signal.SIGTSTP)
    _stopped[0] = True
    os.kill(os.getpid(), signal.SIGSTOP)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def exit_with(status: int) -> None:
    """Leave this process the way the worker left: its exit code, or death by its signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    if status < 0:
        try:
            signal.signal(-status, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL and SIGSTOP have no handler to reset
            pass
        os.kill(os.getpid(), -status)
    os._exit(status if status >= 0 else 128 - status)


def start_server(key: str) -> None:
    """Start a warm server for ``key`` in the background (detached; it closes when idle), unless this
    user already runs :data:`MAX_SERVERS` of them."""
    import subprocess

    if len(_server_keys()) >= MAX_SERVERS:
        return
    code = ("import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
            "from bot.warm import serve; serve(sys.argv[2])")
    try:
        path = absolute_path(sys.path)  # the server leaves this folder: no '' entries
        subprocess.Popen([sys.executable, "-c", code, json.dumps(path), key],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, close_fds=True)
    except OSError:
        pass  # no warm start then: this command runs here anyway


# -- The server -------------------------------------------------------------------------------


def _idle_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get("CASCADE_WARM_IDLE", DEFAULT_IDLE_S)))
    except ValueError:
        return DEFAULT_IDLE_S


def preload() -> None:
    """Import what the warm commands run (the allocator choice first: pyarrow reads it when it loads)."""
    import importlib

    from bot.allocators import use_system_pool_for_arrow

    use_system_pool_for_arrow()
    for module in PRELOAD:
        importlib.import_module(module)


def serve(key: str) -> None:
    """Serve the commands of clients whose :func:`identity` is ``key`` until idle (module docstring)."""
    import gc
    import selectors

    if identity() != key:  # this interpreter would not run the command as the client would
        return
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(socket_name(key))  # a second server for the same key stops here
    except OSError:
        return
    listener.listen(64)  # clients wait in the backlog while the imports below run
    os.chdir("/")
    preload()
    gc.collect()
    gc.freeze()  # workers then do not touch (and so copy) the pages of the preloaded objects
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "listen")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    state = _ServerState(key=key, started=time.time(), idle=_idle_seconds(), listener=listener,
                         selector=selector, wake=(wake_r, wake_w))
    while state.accepting or state.workers:
        timeout = None if state.workers else max(0.0, state.last + state.idle - time.monotonic())
        events = selector.select(timeout)
        if not events and not state.workers:
            break
        for selected, _ in events:
            if selected.data == "listen":
                _accept(state)
            elif selected.data == "wake":
                os.read(wake_r, 4096)
                _reap(state)
            else:
                _client_left(state, selected.data)
        _reap(state)


@dataclass
class _ServerState:
    """What the server loop keeps: its listener, selector, and the running workers (pid → connection)."""

    key: str
    started: float  # wall-clock time, for ``cascade warm``
    idle: float  # seconds without a command before the server exits
    listener: socket.socket
    selector: Any
    wake: tuple[int, int]  # the signal wake-up pipe (read end, write end)
    workers: dict[int, socket.socket] = field(default_factory=dict)
    orphans: set[int] = field(default_factory=set)  # workers whose client hung up
    served: int = 0
    last_peak_rss_mib: float | None = None  # of the last finished command, preloaded pages included
    accepting: bool = True
    last: float = field(default_factory=time.monotonic)  # when the last command started or ended

    def stop_accepting(self) -> None:
        if self.accepting:
            self.selector.unregister(self.listener)
            self.listener.close()
            self.accepting = False


def _accept(state: _ServerState) -> None:
    import selectors

    try:
        conn, _ = state.listener.accept()
    except OSError:
        return
    try:
        conn.settimeout(10.0)
        if _peer_uid(conn) != os.getuid():
            raise OSError("client of another user")
        request, fds = _receive(conn)
    except (OSError, ValueError):
        conn.close()
        return
    try:
        control = request.get("control")
        if control is not None:
            _control(state, conn, control)
            return
        state.last = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _worker(state, conn, request, fds)  # never returns
        try:
            os.setpgid(pid, pid)  # here too (as shells do): the client may signal the group at once
        except OSError:
            pass
        try:
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        except OSError:
            _kill(pid)  # the client is gone: nobody waits for this command
        state.workers[pid] = conn
        state.served += 1
        state.selector.register(conn, selectors.EVENT_READ, pid)  # the client never writes again: EOF
    finally:
        for fd in fds:
            os.close(fd)


def _control(state: _ServerState, conn: socket.socket, control: str) -> None:
    reply = {"pid": os.getpid(), "key": state.key, "started": state.started, "served": state.served,
             "running": len(state.workers), "idle_s": round(time.monotonic() - state.last, 1),
             "last_peak_rss_mib": state.last_peak_rss_mib, "rss_mib": _rss_mib(),
             "checkout": str(Path(__file__).resolve().parent.parent)}
    if control == "stop":
        state.stop_accepting()
    try:
        conn.sendall(json.dumps(reply).encode() + b"\n")
    except OSError:
        pass
    conn.close()


def _rss_mib() -> float | None:
    """This process's resident memory (MiB), from ``/proc/self/status``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One request and the file descriptors sent with it."""
    fds = array.array("i")
    data, ancillary, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, blob in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(blob[: len(blob) - len(blob) % fds.itemsize])
    received = list(fds)
    try:
        if len(data) < _HEADER.size:
            raise ValueError("short request")
        (size,) = _HEADER.unpack_from(data)
        body = data[_HEADER.size:]
        while len(body) < size:
            chunk = conn.recv(size - len(body))
            if not chunk:
                raise ValueError("truncated request")
            body += chunk
        request = json.loads(body)
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        if "control" not in request and len(received) != 3:
            raise ValueError("a command needs stdin, stdout and stderr")
    except BaseException:
        for fd in received:
            os.close(fd)
        raise
    return request, received


def _reap(state: _ServerState) -> None:
    while state.workers:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = state.workers.pop(pid, None)
        if conn is None:
            continue
        state.last_peak_rss_mib = round(usage.ru_maxrss / 1024, 1)  # the worker's own peak (Linux: KiB)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.waitstatus_to_exitcode(status)
        if pid not in state.orphans:
            state.selector.unregister(conn)
        state.orphans.discard(pid)
        state.last = time.monotonic()  # idle from the end of the last command
        try:
            conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
        except OSError:
            pass
        conn.close()


def _client_left(state: _ServerState, pid: int) -> None:
    conn = state.workers.get(pid)
    if conn is None:
        return
    try:
        data = conn.recv(4096, socket.MSG_DONTWAIT)  # a client only ever closes; anything else is dropped
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:  # the client is gone (killed): stop its command; _reap still collects the worker
        state.selector.unregister(conn)
        state.orphans.add(pid)
        _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        pass


# -- The worker: one forked child per command -------------------------------------------------


def _worker(state: _ServerState, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
    """Become the client's ``cascade`` process and run its command; exits, never returns."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own group: signals from the client reach the command's children too
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                    signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        state.selector.close()
        if state.accepting:
            state.listener.close()
        for fd in state.wake:
            os.close(fd)
        for other in state.workers.values():
            other.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        fds.clear()
        _become(request)
        code = _run_cli(request["argv"][1:])
    except BaseException:  # noqa: BLE001  (the worker must never return into the server loop)
        import traceback

        traceback.print_exc()
    finally:  # ``conn`` stays open until here: a client of a dead server sees EOF when the worker ends
        os._exit(code)


def _become(request: dict[str, Any]) -> None:
    """Take the client's working directory, environment, umask, argv, ``__main__`` and stdio."""
    import io
    import types

    os.chdir(request["cwd"])
    os.umask(int(request["umask"]))
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = list(request["argv"])
    main = types.ModuleType("__main__")
    main.__package__ = request.get("main_package")
    sys.modules["__main__"] = main
    streams = []
    for fd, setup in enumerate(request["stdio"]):
        raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
        buffered = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
        streams.append(io.TextIOWrapper(buffered, encoding=setup["encoding"], errors=setup["errors"],
                                        line_buffering=setup["line_buffering"],
                                        write_through=setup["write_through"]))
    sys.stdin, sys.stdout, sys.stderr = streams
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = streams
    if "numpy.random" in sys.modules:  # the global RNG was seeded once, in the server
        sys.modules["numpy.random"].seed()


def _run_cli(argv: list[str]) -> int:
    """``bot.cli.main(argv)`` as a process would run it, then what an interpreter does at exit."""
    import atexit
    import threading

    from bot.cli import main

    code: Any = 0
    try:
        main(argv)
    except SystemExit as err:
        code = err.code
    except BaseException:  # noqa: BLE001  (an uncaught error: its traceback, exit 1, as Python does)
        import traceback

        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # join non-daemon threads, as at exit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return code


# -- Status and stop (``cascade warm``) -------------------------------------------------------


def _server_keys() -> list[str]:
    """The keys of this user's warm-server sockets, from ``/proc/net/unix`` (abstract names start with @)."""
    prefix = f"@{_SOCKET_PREFIX}{os.getuid()}-"
    try:
        table = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return []
    return sorted({fields[-1][len(prefix):] for line in table if (fields := line.split())
                   and fields[-1].startswith(prefix)})


def servers() -> list[dict[str, Any]]:
    """Every warm server of this user, with what it reports of itself."""
    return [info for key in _server_keys() if (info := control(key, "status")) is not None]


def control(key: str, what: str) -> dict[str, Any] | None:
    """Send ``status`` or ``stop`` to the server for ``key``; its reply (None when it is not there)."""
    sock = connect(key)
    if sock is None:
        return None
    try:
        _send(sock, {"control": what})
        return _Replies(sock).next(10.0)
    except (OSError, ValueError):
        return None
    finally:
        sock.close()
