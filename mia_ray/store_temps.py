"""Hidden temporaries in the target store (targets, feature nets, utility records) that a writer killed before
its rename left behind (no torch, no ray).

The store is shared by concurrent sweeps, so a temporary is removed only when no live writer can own it. Its
name ends with its writer, ``p<pid>@<host>.ns<pid namespace>``: one whose process is gone from this host is
abandoned at once (the rerun after a ``kill -9`` of a whole sweep, measured: a utility grid's
``.<name>.png.<hex>.tmp`` and a feature net's ``.tmp-<key>-<hex>`` survived the rerun); any other (a writer on
another node, or a name from before the tag) once older than STALE_SECONDS (a save takes seconds). A reused pid
reads as alive: kept until stale.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time

STALE_SECONDS = 3600  # a temporary this old has no live writer


def _host() -> str:
    """This host and pid namespace (``<hostname>.ns<inode>``): containers sharing a hostname (``--network host``)
    have pid tables of their own, and a writer alive in one reads as gone in the other. No '-': the tag parses
    from the right."""
    try:
        ns = ".ns" + os.readlink("/proc/self/ns/pid").split("[", 1)[1].rstrip("]")  # pid:[4026531836]
    except (OSError, IndexError):  # not Linux
        ns = ""
    return (re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host") + ns


HOST = _host()
_TAG = re.compile(r"-p(\d+)@([A-Za-z0-9._]+?)(?:\.tmp)?$")


def owner_tag() -> str:
    """``p<pid>@<host>`` of this process: the end of the store temporaries it writes."""
    return f"p{os.getpid()}@{HOST}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's live process
        return True
    return True


def abandoned(path: str, now: float | None = None) -> bool:
    """True when no live writer can own the temporary ``path``: its tagged writer on this host is gone, or it is
    older than STALE_SECONDS."""
    m = _TAG.search(os.path.basename(path))
    if m and m.group(2) == HOST and int(m.group(1)) > 0 and not _alive(int(m.group(1))):
        return True
    try:
        return (time.time() if now is None else now) - os.path.getmtime(path) > STALE_SECONDS
    except FileNotFoundError:
        return False


def clear_abandoned(folder: str, own: re.Pattern) -> None:
    """Remove the entries of the local ``folder`` whose names match ``own`` (one store entry's temporaries)
    and that are :func:`abandoned`; files and folders alike."""
    try:
        entries = os.listdir(folder)
    except FileNotFoundError:
        return
    now = time.time()
    for entry in entries:
        path = os.path.join(folder, entry)
        if not own.fullmatch(entry) or not abandoned(path, now):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass


__all__ = ["HOST", "STALE_SECONDS", "abandoned", "clear_abandoned", "owner_tag"]
