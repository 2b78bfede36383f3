"""How the data and conversion tools end on an error they know: a one-line message, exit 2.

Every `python -m utils.*` command wraps its main() in `command`, so that a problem with the
user's input (`DataError`) or with the file system (a read-only or full destination, a missing or
unreadable path) ends the same way everywhere: "error: <file>: <what> ; <fix>" on stderr and
exit status 2, never a Python traceback. Errors of other kinds are bugs and keep their traceback.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable

from benchmark.errors import DataError  # noqa: F401 (one class for the tools and the benchmark)

EXIT_USAGE = 2


# errno -> what to do about it, for the OSErrors a user can cause and fix.
_OS_FIXES = {
    errno.ENOSPC: "the disk is full: free space there or choose a destination with room, then rerun "
    "(finished outputs are kept, the unfinished one was removed)",
    errno.EDQUOT: "the disk quota is used up: free space or choose another destination, then rerun",
    errno.EROFS: "the file system is read-only: choose a writable destination",
    errno.EACCES: "permission denied: make the folder writable (or readable) for this user or choose another",
    errno.EPERM: "operation not permitted: make the folder writable for this user or choose another",
    errno.ENOENT: "no such file or folder: check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "is a folder where a file was expected: check the path",
    errno.EEXIST: "already exists: remove it or choose another name",
    errno.ENOTEMPTY: "the folder is not empty: remove it or choose another name",
    errno.EIO: "input/output error: the disk or network file system failed; check it and rerun",
}


def describe_os_error(e: OSError) -> str:
    """`e` as "<path>: <fix> (<strerror>)", naming the file when the error carries one."""
    where = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    fix = _OS_FIXES.get(e.errno)
    reason = e.strerror or str(e) or type(e).__name__
    text = f"{fix} ({reason})" if fix else f"{reason}; check the path and the disk, then rerun"
    return f"{where}: {text}" if where else text


def with_path(e: OSError, path, tmp=None) -> OSError:
    """`e` naming the output `path` when it names no file (a failed write()) or names the output's
    temporary `tmp` (or a file inside it): the user knows the destination, not the staging name."""
    if e.errno is None:
        return e
    name = e.filename
    if name is not None and not (tmp is not None and str(name).startswith(str(tmp))):
        return e
    return type(e)(e.errno, e.strerror or str(e), str(path))


def disk_full(folder, need: int = 1 << 20) -> bool:
    """Whether the file system of `folder` has less than `need` bytes left for this user. Some
    writers (torch's zip writer) report a full disk as a RuntimeError without an errno."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < need


def full_disk_error(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def command(main: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a tool's main(): known errors become "error: ..." on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
        except OSError as e:
            print(f"error: {describe_os_error(e)}", file=sys.stderr)
        return EXIT_USAGE

    return wrapper


def positive_int(text: str) -> int:
    """argparse type: an integer of 1 or more (argparse reports anything else, exit 2)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: use 1 or more")
    return value
