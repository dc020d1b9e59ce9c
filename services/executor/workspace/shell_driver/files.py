"""File operations of the driver: read or replace one file, binary-safe, without a new process.

Paths arrive absolute and normalised (the host resolves them).  Reads follow symlinks and refuse
directories and anything that could block (FIFOs, sockets).  Writes create the parents, write a
temporary file next to the target and rename it over the target (a symlink's target is
replaced, the link kept), so a failure - the per-file size limit (EFBIG), a full disk quota
(ENOSPC/EDQUOT) - leaves the old content whole; a replaced file keeps its mode and owner.
Failures are ``FileOpFailed(reason, missing)``; ``missing`` means the path or a parent does not exist.
"""

import base64
import contextlib
import errno
import os
import stat

_REASONS = {
    errno.EFBIG: "file too large: past the workspace's per-file size limit",
    errno.ENOSPC: "no space left: the workspace's disk quota is full",
    errno.EDQUOT: "no space left: the workspace's disk quota is full",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a parent is not a directory",
    errno.ENAMETOOLONG: "file name too long",
}


class FileOpFailed(Exception):
    def __init__(self, reason, missing=False):
        super().__init__(reason)
        self.reason = reason
        self.missing = missing


def _failed(exc):
    missing = exc.errno == errno.ENOENT
    reason = "no such file" if missing else _REASONS.get(exc.errno, exc.strerror or str(exc))
    return FileOpFailed(reason, missing)


def read(path, max_bytes):
    """``{"data": base64 of up to max_bytes, "truncated": bool}``."""
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise FileOpFailed("is a directory")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            raise FileOpFailed("not a regular file")
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise _failed(exc) from exc
    return {"data": base64.b64encode(data[:max_bytes]).decode(), "truncated": len(data) > max_bytes}


def write(path, data):
    """Create or replace ``path`` with ``data`` (bytes); ``{"written": len(data)}``."""
    target = os.path.realpath(path)  # write through a symlink, keep the link
    parent, name = os.path.split(target)
    if not name:
        raise FileOpFailed("is a directory")
    tmp = os.path.join(parent, f".{name}.ise-{os.getpid()}.tmp")
    try:
        try:
            st = os.stat(target)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise FileOpFailed("is a directory")
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise FileOpFailed("not a regular file")
        os.makedirs(parent, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if st is not None:
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
                with contextlib.suppress(OSError):  # not root: the file stays ours
                    os.fchown(fd, st.st_uid, st.st_gid)
            # Querying the times makes the rename below stamp a fine-grained ctime on kernels with
            # multigrain timestamps (6.13+), so a file written right after another sorts after it in Inspect.
            os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        _discard(tmp)
        if isinstance(exc, FileExistsError):  # makedirs met a file where a folder should be
            raise FileOpFailed("a parent is not a directory") from exc
        raise _failed(exc) from exc
    except FileOpFailed:
        _discard(tmp)
        raise
    return {"written": len(data)}


def _discard(path):
    with contextlib.suppress(OSError):
        os.unlink(path)
