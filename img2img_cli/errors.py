"""Domain errors raised by the core and translated to one stderr line by the CLI.

Hierarchy (after huggingface_hub ``cli/_errors.py`` and simonw/llm ``errors.py``)::

    Img2ImgError            base class; ``exit_code`` is what the CLI exits with
    ├── UsageError          a bad option value, no inputs, a bad style (exit 2)
    ├── ModelError          a model that cannot be found or loaded (exit 2)
    ├── InputError          one input image cannot be read (that input fails, exit 1)
    └── OutputError         an output cannot be written (that input fails, exit 1)

Every message is a single line that names the flag, file or model concerned.
"""

from __future__ import annotations


class Img2ImgError(Exception):
    """Base class of every error the tool reports to the user without a traceback."""

    exit_code: int = 1


class UsageError(Img2ImgError):
    """A bad option value or missing input, detected before any model is loaded (exit 2)."""

    exit_code = 2


class ModelError(Img2ImgError):
    """``--model`` cannot be resolved or loaded (exit 2)."""

    exit_code = 2


class InputError(Img2ImgError):
    """One input file cannot be used (not an image, truncated, unreadable...)."""

    exit_code = 1


class OutputError(Img2ImgError):
    """One output file cannot be written (folder not writable, disk full...).

    ``errno`` is the underlying OS error number when there is one (``errno.ENOSPC`` for a
    full disk, which stops the run rather than fail every remaining file).
    """

    exit_code = 1

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno
