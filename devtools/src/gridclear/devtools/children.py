"""Long-running child processes that can never outlive us, started without ``preexec_fn``.

Throwaway servers, the simulator and the demo's processes must die with whoever
started them, even by ``kill -9``: Linux does that when the child has asked for a
parent-death signal (``prctl(PR_SET_PDEATHSIG)``). The child must ask itself, after
fork. ``subprocess``'s ``preexec_fn`` would do it, but it runs Python between fork
and exec, which is unsafe in a process with threads (paho's network loop, a server
in a thread, pytest-timeout's): the child may wait forever on a lock that another
thread held at fork time, and CPython warns about it.

So the child is a tiny exec wrapper instead, a fresh interpreter with one thread::

    python -I -S -c <wrapper> <parent pid> <signal> <uid> <gid> <command...>

It drops to the server's unprivileged user when asked (the setting must come after
the uid change, which clears it), asks for ``signal`` on its parent's death, checks
that the parent did not die before that, and execs the command: same pid, and the
setting survives exec (unless the binary is set-uid, which no server here is).
The wrapper drops privileges itself rather than through ``Popen(user=...)``
because the interpreter may live where the unprivileged user cannot read it (a
home folder); the command it execs can be read.

Limits, both Linux's: elsewhere the command runs directly and :meth:`~subprocess.
Popen.kill`/a clean stop are the only guards. And the signal comes when the
*thread* that started the child ends, not the process, so start long-running
children from a thread that lives as long as they should (the main thread, as the
pytest plugin and the demo do).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["LOG_TAIL_LINES", "log_tail", "pdeathsig_argv", "spawn_child"]

LOG_TAIL_LINES = 40
"""How many lines of a child's log an error message quotes."""

# Runs in the fresh interpreter; argv: parent pid, signal, uid, gid (-1: keep), command.
_EXEC_WITH_PDEATHSIG = """\
import ctypes, os, sys
parent, signum, uid, gid = (int(arg) for arg in sys.argv[1:5])
libc = ctypes.CDLL(None, use_errno=True)
if gid >= 0:
    os.setgroups([])
    os.setgid(gid)
if uid >= 0:
    os.setuid(uid)
if libc.prctl(1, signum, 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
    sys.exit("prctl(PR_SET_PDEATHSIG): " + os.strerror(ctypes.get_errno()))
if os.getppid() != parent:  # the parent died before the prctl: nobody would signal us
    sys.exit(0)
os.execv(sys.argv[5], sys.argv[5:])
"""


def pdeathsig_argv(
    argv: Sequence[str],
    *,
    death_signal: signal.Signals = signal.SIGTERM,
    user: pwd.struct_passwd | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """``argv`` wrapped so that the command gets ``death_signal`` when we die (Linux).

    The command is looked up on ``env``'s ``PATH`` (ours when None) now, so a
    missing one raises :class:`FileNotFoundError` here, as ``Popen`` would. With
    ``user`` the command runs as that account (we must be root). Elsewhere than
    Linux ``user`` must be None and the command is returned as it is.
    """
    path = (env if env is not None else os.environ).get("PATH")
    executable = shutil.which(argv[0], path=path)
    if executable is None:
        raise FileNotFoundError(f"no such command: {argv[0]}")
    if not sys.platform.startswith("linux"):
        if user is not None:
            raise OSError("running a child as another user needs Linux")
        return [executable, *argv[1:]]
    uid, gid = (user.pw_uid, user.pw_gid) if user else (-1, -1)
    header = [sys.executable, "-I", "-S", "-c", _EXEC_WITH_PDEATHSIG]
    settings = [str(os.getpid()), str(int(death_signal)), str(uid), str(gid)]
    return [*header, *settings, executable, *argv[1:]]


def spawn_child(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    user: pwd.struct_passwd | None = None,
    death_signal: signal.Signals = signal.SIGTERM,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running child that can never outlive us.

    It runs in its own session (a terminal's Ctrl-C reaches only us, and we stop
    children in order), writes stdout and stderr to ``log_path`` (appended),
    runs as ``user`` when given, and receives ``death_signal`` if we die without
    stopping it, even by ``kill -9`` (see the module's notes). The returned
    process's pid is the command's own.
    """
    wrapped = pdeathsig_argv(argv, death_signal=death_signal, user=user, env=env)
    with log_path.open("ab") as log:
        return subprocess.Popen(  # noqa: S603 -- fixed argv, no shell
            wrapped,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
        )


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log ("" when it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
