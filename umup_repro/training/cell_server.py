"""Many cells per process: a warm server that trains each cell in a forked child.

Why: a `umup-repro train` process spends ≈ 5 s importing torch and Lightning before a small cell
trains for well under a second (docs/design.md, "Many cells per process"). The server imports them
once; each `umup-repro train` that finds `UMUP_CELL_SERVER` set (the DAG sets it, `batch_cells`)
becomes a thin client: it hands the server its arguments, working directory, environment and
stdin/stdout/stderr, and the server forks a child that runs exactly `umup-repro train`'s code
(`cli.main`) there. Fork, not a loop over cells in one process: each cell keeps its own process, so
its exit code, signals, seeds, thread settings and a crash or kill are its own, and a bad cell
cannot take its batch-mates down. The server imports but never computes, so the children fork
from a state with no OpenMP pool or device context to inherit.

The client forwards SIGTERM/SIGINT/SIGUSR1/SIGUSR2/SIGHUP to the child (a job scheduler's stop
signal checkpoints the cell as before) and exits with the child's exit code (a child killed by a
signal: the client kills itself with that signal). A SIGKILLed client takes its child with it:
the child watches the connection and kills itself when the client is gone, as a SIGKILLed
`umup-repro train` would be. The server serves one environment: its socket's name hashes the
Python, the package's files, the SLURM job and the environment variables read at import time, so
a changed package or another job starts a new server; it exits after `--idle` seconds without a
cell, or after `--max-cells` cells (`batch_cells`). One module holds both sides; the client's
side imports only the standard library. The server is `umup-repro cell-server`, started by the
first client: the CLI hands it its own `main` to run in each child.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

SERVER_ENV = "UMUP_CELL_SERVER"  # "N": use (or start) a server that trains up to N cells
FORWARDED = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGHUP")
# read when torch/Lightning are imported (or that select a device): a server serves one set of them
IMPORT_TIME_ENV = ("TORCH", "PYTORCH", "CUDA", "OMP", "MKL", "LIGHTNING", "PL_", "PYTHON", "SLURM_JOB_ID", "LD_")
START_SECONDS = 120  # a loaded 2-core machine imports torch + Lightning in ≈ 10 s
PACKAGE = Path(__file__).resolve().parents[1]


def _send(conn: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = (json.dumps(message) + "\n").encode()
    if fds:
        socket.send_fds(conn, [data], fds)
    else:
        conn.sendall(data)


def _receive(conn: socket.socket, buffer: bytearray) -> dict | None:
    """The next newline-terminated JSON message; None when the peer has closed."""
    while b"\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buffer.extend(chunk)
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return json.loads(line)


def batch_size(environ: Mapping[str, str]) -> int:
    """Cells per server that `umup-repro train` should use, 0 for none: UMUP_CELL_SERVER unset or
    1, or this process is a rank of a distributed cell (launched by srun or by Lightning: each
    rank is a plain process, as before)."""
    value = environ.get(SERVER_ENV, "")
    if not value.isdigit() or int(value) <= 1:
        return 0
    if any(name in environ for name in ("LOCAL_RANK", "RANK")) or int(environ.get("SLURM_NTASKS") or 1) > 1:
        return 0
    return int(value)


def server_key(environ: Mapping[str, str] | None = None) -> str:
    """What a server's code and import-time state depend on: the interpreter, the package's files
    (path, size, mtime) and the import-time environment."""
    environ = os.environ if environ is None else environ
    digest = hashlib.sha256(sys.executable.encode())
    for path in sorted(PACKAGE.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    for name in sorted(environ):
        if name.startswith(IMPORT_TIME_ENV) and name != SERVER_ENV:
            digest.update(f"{name}={environ[name]}".encode())
    return digest.hexdigest()[:16]


def socket_path(key: str) -> Path:
    """In a folder of the user's own under the temporary folder ($TMPDIR; /tmp where that would make
    the path longer than a Unix socket's 107 bytes). On a shared machine (a login node) another user
    could create that folder first and listen there: it must be ours and closed to others, or the
    cell is refused with the folder named (the server also checks each client's uid)."""
    base = Path(tempfile.gettempdir())
    if len(str(base)) > 60:
        base = Path("/tmp")
    folder = base / f"umup-repro-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(
            f"cell server folder {folder} is not a private folder of this user (owner uid {info.st_uid},"
            f" mode {stat.S_IMODE(info.st_mode):o}): remove it, or set TMPDIR elsewhere, or batch_cells: 1"
        )
    return folder / f"cells-{key}.sock"


def _same_user(conn: socket.socket) -> bool:
    """Whether the process at the other end of `conn` runs as this user (SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1] == os.getuid()


def add_parser(sub):
    """The `cell-server` command's options (the CLI gives it its `main` to run in each child)."""
    p = sub.add_parser(
        "cell-server", help="the warm process `train` starts itself when UMUP_CELL_SERVER=N (preset: batch_cells)"
    )
    p.add_argument("socket", help="the Unix socket to listen on")
    p.add_argument("--max-cells", type=int, default=1000, help="cells to train before exiting")
    p.add_argument("--idle", type=float, default=60.0, help="seconds without a cell before exiting")
    return p


# --------------------------------------------------------------------------------------------
# the client: what `umup-repro train` becomes when UMUP_CELL_SERVER is set


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    if not _same_user(conn):  # (the folder's check makes this impossible; never hand our files to another user)
        conn.close()
        raise PermissionError(f"cell server socket {path} belongs to another user")
    return conn


def _start_server(path: Path, max_cells: int) -> socket.socket:
    """Connect to the server at `path`, starting it first if none listens (one starter at a time)."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = _connect(path)
        if conn is not None:
            return conn
        path.unlink(missing_ok=True)  # a server that died without removing it
        log = open(path.with_suffix(".log"), "ab")
        command = [sys.executable, "-m", "umup_repro.cli", "cell-server", str(path), "--max-cells", str(max_cells)]
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            conn = _connect(path)
            if conn is not None:
                return conn
            time.sleep(0.05)
    raise RuntimeError(f"the cell server did not start within {START_SECONDS} s (its log: {path.with_suffix('.log')})")


def run_in_server(argv: list[str], max_cells: int) -> int | None:
    """Run `umup-repro ARGV` in a forked child of the warm server; its exit code, or None when no
    server can be used (then the caller trains in its own process, as without batch_cells)."""
    try:
        conn = _start_server(socket_path(server_key()), max_cells)
    except (OSError, RuntimeError) as err:
        print(f"umup-repro train: warning: no cell server ({err}); training in this process", file=sys.stderr)
        return None
    request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
    _send(conn, request, [0, 1, 2])
    buffer = bytearray()
    reply = _receive(conn, buffer)
    if reply is None or "pid" not in reply:
        print("umup-repro: error: the cell server closed the connection before starting the cell", file=sys.stderr)
        return 1
    child = int(reply["pid"])
    print(f"umup-repro train: in process {child}, forked by cell server {reply['server']}", file=sys.stderr, flush=True)

    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for name in FORWARDED:
        signal.signal(getattr(signal, name), forward)
    while True:
        try:
            reply = _receive(conn, buffer)
            break
        except InterruptedError:  # (PEP 475 retries; kept for clarity)
            continue
    if reply is None or "exit" not in reply:
        print("umup-repro: error: the cell's process ended without an exit status", file=sys.stderr)
        return 1
    code = int(reply["exit"])
    if code < 0:  # killed by a signal: so is the client, as a plain `umup-repro train` would be
        sys.stdout.flush()
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # (those two cannot be caught anyway)
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


# --------------------------------------------------------------------------------------------
# the server


def _warm_imports() -> None:
    """What every cell imports, done once (never any computation: see the module docstring)."""
    import lightning  # noqa: F401

    import umup_repro.data  # noqa: F401
    import umup_repro.training.lightning_module  # noqa: F401
    import umup_repro.training.train  # noqa: F401


def _child(conn: socket.socket, request: dict, fds: list[int], run: Callable[[list[str]], int]) -> None:
    """In the forked child: become the client's `umup-repro train` process (`run` is the CLI's
    `main`), then exit."""
    import io
    import threading

    for number, fd in enumerate(fds[:3]):
        os.dup2(fd, number)
        os.close(fd)
    for name in FORWARDED:
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.pop(SERVER_ENV, None)  # the child is the cell's process, not another client
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=os.isatty(1))
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    sys.argv = ["umup-repro", *request["argv"]]  # (Lightning's launcher re-runs `python -m umup_repro.cli`)
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        import torch

        torch.set_num_threads(int(threads))

    def watch() -> None:  # the client is gone (SIGKILLed): so is this cell, as it would be
        while conn.recv(4096):
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()
    code = 1
    try:
        code = int(run(request["argv"]) or 0)
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 1
    except BaseException:  # noqa: BLE001 - a bug: its traceback goes where the plain command's would
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:
                pass
        try:
            _send(conn, {"exit": code})
        finally:
            os._exit(code)


def serve(path: Path, max_cells: int, idle: float, run: Callable[[list[str]], int]) -> None:
    """Accept clients until `max_cells` cells were started or `idle` seconds passed without any
    cell running; reap each child and tell its client how it ended."""
    if not path.parent.is_dir():
        from umup_repro.core.errors import UserError

        raise UserError(f"cell-server {path}: the folder {path.parent} does not exist")
    _warm_imports()
    for name in FORWARDED:  # a scheduler's signal to the whole job is for the cells, not the server
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = path.with_name(f"{path.name}.{os.getpid()}")
    listener.bind(str(bound))
    listener.listen(64)
    os.replace(bound, path)  # clients connect only once it listens
    listener.settimeout(0.2)
    ours = os.stat(path).st_ino
    running: dict[int, socket.socket] = {}
    started, last_busy = 0, time.monotonic()
    while started < max_cells and (running or time.monotonic() - last_busy < idle):
        try:
            conn, _ = listener.accept()
            _fork_cell(listener, conn, running, run)
            started += 1
        except TimeoutError:
            pass
        _reap(running, block=False)
        if running:
            last_busy = time.monotonic()
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_ino == ours:
            path.unlink()  # no new clients; those already in the queue are still served
    listener.setblocking(False)
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            break
        _fork_cell(listener, conn, running, run)
    listener.close()
    while running:
        _reap(running, block=True)


def _fork_cell(
    listener: socket.socket, conn: socket.socket, running: dict[int, socket.socket], run: Callable[[list[str]], int]
) -> None:
    conn.setblocking(True)
    if not _same_user(conn):  # only this user's cells
        conn.close()
        return
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    request = _receive(conn, bytearray(data))  # the rest of a long environment, if any
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        listener.close()
        _child(conn, request or {}, fds, run)
    for fd in fds:
        os.close(fd)
    _send(conn, {"pid": pid, "server": os.getpid()})
    running[pid] = conn


def _reap(running: dict[int, socket.socket], block: bool) -> None:
    while running:
        pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        if pid == 0:
            return
        conn = running.pop(pid, None)
        if conn is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        try:
            _send(conn, {"exit": code})  # the child's own message came first where it could send one
        except OSError:
            pass
        conn.close()
