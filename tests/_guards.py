"""Test helpers that watch a run from outside: a network guard for subprocesses and an inotify
watch on input folders (what was opened, and whether anything was written)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

# ---- no network: a sitecustomize.py that every Python process on PYTHONPATH picks up --------------
SITECUSTOMIZE = r'''
"""Installed by the crl-pipe tests: any attempt to reach the network is logged and refused."""
import os
import socket
import sys

_LOG = os.environ.get("CRL_PIPE_NET_GUARD_LOG")


def _note(kind, detail=""):
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as fh:
            argv = " ".join(sys.argv)[:300].replace("\t", " ").replace("\n", " ")
            fh.write(f"{kind}\t{os.getpid()}\t{argv}\t{detail}\n")


def _refuse(what):
    _note("blocked", what)
    raise OSError(f"network access is blocked in the crl-pipe tests ({what})")


def _local(sock):
    return getattr(sock, "family", None) == getattr(socket, "AF_UNIX", object())


_connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto


def connect(self, address, *args):
    return _connect(self, address, *args) if _local(self) else _refuse(f"connect {address!r}")


def connect_ex(self, address, *args):
    return _connect_ex(self, address, *args) if _local(self) else _refuse(f"connect_ex {address!r}")


def sendto(self, data, *args):
    return _sendto(self, data, *args) if _local(self) else _refuse(f"sendto {args[-1]!r}")


_getaddrinfo = socket.getaddrinfo


def getaddrinfo(host, *args, **kwargs):
    if host in (None, "localhost", "127.0.0.1", "::1", b"localhost"):
        return _getaddrinfo(host, *args, **kwargs)
    return _refuse(f"getaddrinfo {host!r}")


socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto
socket.getaddrinfo = getaddrinfo
_note("installed")
'''


def network_guard_env(folder: Path, base: dict[str, str] | None = None) -> tuple[dict[str, str], Path]:
    """Environment whose Python processes refuse network access; returns it and the guard's log file."""
    guard = folder / "net_guard"
    guard.mkdir(parents=True, exist_ok=True)
    (guard / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = folder / "net_guard.log"
    log.write_text("")
    env = dict(base if base is not None else os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(guard), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env["CRL_PIPE_NET_GUARD_LOG"] = str(log)
    return env, log


def read_guard_log(log: Path) -> tuple[list[str], list[str]]:
    """(argv of each process that installed the guard, each blocked attempt)."""
    installed, blocked = [], []
    for line in log.read_text(encoding="utf-8").splitlines():
        kind, _pid, argv, detail = (line.split("\t") + ["", "", ""])[:4]
        (installed if kind == "installed" else blocked).append(argv if kind == "installed" else f"{argv}: {detail}")
    return installed, blocked


def network_namespace_prefix() -> list[str]:
    """``unshare -rn`` where this machine allows a private network namespace (no network at all), else []."""
    exe = shutil.which("unshare")
    if exe is None or not sys.platform.startswith("linux"):
        return []
    try:
        ok = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [exe, "-rn"] if ok else []


# ---- inotify: which files in a folder were opened, and was anything written? -----------------------
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE, IN_CLOSE_NOWRITE = 0x2, 0x4, 0x8, 0x10
IN_OPEN, IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x20, 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
WRITES = {
    IN_MODIFY: "modified",
    IN_ATTRIB: "metadata changed",
    IN_CLOSE_WRITE: "closed after opening for writing",
    IN_MOVED_FROM: "moved away",
    IN_MOVED_TO: "moved in",
    IN_CREATE: "created",
    IN_DELETE: "deleted",
    IN_DELETE_SELF: "folder deleted",
    IN_MOVE_SELF: "folder moved",
}
_MASK = IN_OPEN | IN_CLOSE_NOWRITE | sum(WRITES)
_EVENT = struct.Struct("iIII")


class FolderWatch:
    """inotify watch on some folders (not recursive): :meth:`events` gives (path, mask) pairs.

    Root ignores file permissions, so this, not ``chmod``, is what shows that a run opens its
    inputs read-only: a file opened for writing reports ``IN_CLOSE_WRITE`` when closed, even unchanged.
    """

    def __init__(self, folders: list[Path]) -> None:
        libc_name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(libc_name, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._folders: dict[int, Path] = {}
        for folder in folders:
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(folder), _MASK)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch failed on {folder}")
            self._folders[wd] = folder
        self._events: list[tuple[Path, int]] = []

    @staticmethod
    def available() -> bool:
        if not sys.platform.startswith("linux"):
            return False
        libc = ctypes.util.find_library("c")
        return libc is not None and hasattr(ctypes.CDLL(libc), "inotify_init1")

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0").decode()
                folder = self._folders.get(wd, Path("?"))
                self._events.append((folder / name if name else folder, mask))
                offset += _EVENT.size + length

    def events(self) -> list[tuple[Path, int]]:
        self._drain()
        return list(self._events)

    def close(self) -> None:
        self._drain()
        os.close(self._fd)
