"""Inputs: files and folders given on the command line, expanded into a sorted list of images."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .io import IMAGE_EXTENSIONS, display


@dataclass(frozen=True)
class InputItem:
    """One input image: its ``path`` and ``rel``, the relative path its outputs are named from
    (the file name for a file given directly; the path below the folder for a folder's files)."""

    path: Path
    rel: Path


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def collect_inputs(paths: list[Path], recursive: bool = False) -> list[InputItem]:
    """Expand files and folders into a list of images, in order.

    A folder contributes its image files (by extension, :data:`~img2img_cli.io.IMAGE_EXTENSIONS`),
    sorted by path; hidden files and other files are skipped; subfolders only with
    ``recursive`` (symlinked folders are not followed, so a symlink loop cannot recurse).
    A file given directly is used whatever its extension.

    Raises:
        UsageError: a path that does not exist, or no image at all.
    """
    items: list[InputItem] = []
    for p in paths:
        if p.is_dir():
            found = []
            if recursive:
                for root, dirs, files in os.walk(p, followlinks=False):
                    dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
                    for f in files:
                        if not _is_hidden(f) and Path(f).suffix.lower() in IMAGE_EXTENSIONS:
                            found.append(Path(root) / f)
            else:
                for f in p.iterdir():
                    if not _is_hidden(f.name) and f.suffix.lower() in IMAGE_EXTENSIONS and not f.is_dir():
                        found.append(f)
            for f in sorted(found, key=lambda f: f.relative_to(p).parts):
                items.append(InputItem(f, f.relative_to(p)))
        elif p.exists() or p.is_symlink():
            items.append(InputItem(p, Path(p.name)))
        else:
            raise UsageError(f"{display(p)}: no such file or folder")
    if not items:
        raise UsageError(f"no input images found in {', '.join(display(p) for p in paths)}")
    return items
