"""Images out: atomic writes with the umask's file mode, free names, and the hidden temporary
files of killed runs cleaned up. No model code here."""

from __future__ import annotations

import errno
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Callable

from .errors import OutputError
from .io import display, one_line


def free_name(path: Path) -> Path:
    """``path`` if no file is there, else the first free ``<stem>-0001<ext>``, ``-0002``..."""
    if not os.path.lexists(path):
        return path
    for i in range(1, 1_000_000):
        candidate = path.with_name(f"{path.stem}-{i:04d}{path.suffix}")
        if not os.path.lexists(candidate):
            return candidate
    raise OutputError(f"{display(path)}: no free file name left")


_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
_TMP_RE = re.compile(r"^\.img2img-(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)-.*\.tmp$")


def temp_prefix() -> str:
    """Prefix of this process's temporary files: ``.img2img-<host>-<pid>-`` (hidden)."""
    return f".img2img-{_HOST}-{os.getpid()}-"


def remove_stale_temp_files(folder: Path) -> int:
    """Delete temporary files left in ``folder`` (not its subfolders) by img2img processes of
    this host that no longer run (a SIGKILL or power cut mid-write). Files of live processes
    and of other hosts (a shared output folder) are left alone. Returns how many were removed.
    """
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        m = _TMP_RE.match(entry.name)
        if not m or m.group("host") != _HOST:
            continue
        pid = int(m.group("pid"))
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # someone else's live process
        try:
            os.unlink(entry.path)
            removed += 1
        except OSError:
            pass
    return removed


def new_file_mode() -> int:
    """The permission bits a plain ``open(path, "w")`` gives a new file now: ``0o666`` less
    the process's umask (read from ``/proc/self/status`` on Linux, so no thread ever sees a
    changed umask; elsewhere by setting and restoring it)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _kept_mode(dest: Path) -> int:
    """The permission bits of an existing ``dest`` (kept by ``--overwrite``), else those of a new file."""
    try:
        return os.stat(dest).st_mode & 0o7777
    except OSError:
        return new_file_mode()


def atomic_save(
    image,
    dest: Path,
    fmt: str,
    infotext: str,
    *,
    quality: int = 95,
    overwrite: bool = False,
    xmp: bytes | None = None,
    finish: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``image`` with its infotext to ``dest`` atomically and return the path written.

    The image is written to a hidden temporary file in ``dest``'s folder
    (:func:`temp_prefix`), flushed and fsync'ed, then moved into place (``os.replace`` with
    ``overwrite``; otherwise ``os.link``, which fails rather than replace a file, and the
    next free name ``<stem>-0001<ext>`` is taken). A killed process leaves no truncated image
    under a real name, and never an existing file replaced without ``overwrite``.

    The file gets the mode a plain ``open()`` would give it under the current umask
    (:func:`new_file_mode`; ``mkstemp`` alone would give ``0o600``); a file replaced with
    ``overwrite`` keeps its own mode.

    Args:
        xmp: an XMP packet to embed (:func:`img2img_cli.metadata.write_image`), or ``None``.
        finish: called with the temporary file once it is written, before it is moved into
            place (e.g. to sign it, :mod:`img2img_cli.credentials`); what it raises fails the
            write like any other error.

    Raises:
        OutputError: the folder cannot be created or written, the disk is full (``errno``
            set)...; no temporary file is left behind.
    """
    from .metadata import write_image

    folder = dest.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{display(folder)}: cannot create output folder ({one_line(e)})", e.errno) from None
    tmp = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(), suffix=".tmp", dir=folder)
        tmp = Path(tmp_name)
        try:
            os.fchmod(fd, _kept_mode(dest) if overwrite else new_file_mode())
        finally:
            os.close(fd)
        write_image(image, tmp, fmt, infotext, quality=quality, xmp=xmp)
        if finish is not None:
            finish(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, dest)
            return dest
        while True:
            target = free_name(dest)
            try:
                os.link(tmp, target)
            except FileExistsError:
                continue  # taken between free_name and link by another process
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                    raise
                if os.path.lexists(target):
                    continue
                os.replace(tmp, target)  # filesystem without hard links
                return target
            os.unlink(tmp)
            return target
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(f"{display(dest)}: cannot write ({one_line(e)})", e.errno) from None
    except ValueError as e:  # e.g. infotext too long for a JPEG's EXIF segment
        raise OutputError(f"{display(dest)}: cannot write ({one_line(e)})") from None
    finally:
        if tmp is not None and os.path.lexists(tmp):
            try:
                os.unlink(tmp)
            except OSError:
                pass
