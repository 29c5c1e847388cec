"""Output names: ``-o FILE`` or ``-o DIR``, and each input's planned output paths.

Names come only from input names, ``-o`` and a jobs file's checked relative names: a prompt or
metadata can never place a file outside the output folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath

from .errors import UsageError
from .inputs import InputItem
from .io import EXTENSION_FORMATS, FORMAT_EXTENSIONS, display, output_name


@dataclass(frozen=True)
class OutputPlan:
    """Where outputs go: ``file`` (``-o FILE``, one input, one image) or ``folder``."""

    folder: Path
    fmt: str
    file: Path | None = None

    @classmethod
    def make(cls, output: Path | None, fmt: str | None, n_outputs: int) -> "OutputPlan":
        """Decide between ``-o FILE`` and ``-o DIR``.

        ``-o`` with an image extension (``.png``, ``.jpg``, ``.jpeg``, ``.webp``) that is not an
        existing folder names a file, allowed only when the run writes exactly one image.

        Raises:
            UsageError: ``-o FILE`` with several outputs, or an extension contradicting ``--format``.
        """
        if output is not None and output.suffix.lower() in EXTENSION_FORMATS and not output.is_dir():
            ext_fmt = EXTENSION_FORMATS[output.suffix.lower()]
            if n_outputs != 1:
                raise UsageError(
                    f"-o {display(output)} names one file but this run writes {n_outputs} images; "
                    "pass a folder to -o"
                )
            if fmt is not None and fmt != ext_fmt:
                raise UsageError(f"--format {fmt} contradicts -o {display(output)}")
            return cls(folder=output.parent, fmt=ext_fmt, file=output)
        return cls(folder=output if output is not None else Path("outputs"), fmt=fmt or "png")

    def paths_for(self, item: InputItem, num_images: int, name: PurePath | None = None) -> list[Path]:
        """The output path of each of ``item``'s images (before free-name resolution).

        ``name``: an explicit relative output name (from a jobs file); its extension, if an
        image one, is kept, else the format's is added.
        """
        if self.file is not None:
            return [self.file]
        if name is not None:
            ext = name.suffix if name.suffix.lower() in EXTENSION_FORMATS else FORMAT_EXTENSIONS[self.fmt]
            stem = name.name[: -len(name.suffix)] if name.suffix.lower() in EXTENSION_FORMATS else name.name
            base = self.folder / name.parent
            if num_images == 1:
                return [base / f"{stem}{ext}"]
            return [base / f"{stem}-{k}{ext}" for k in range(num_images)]
        if num_images == 1:
            return [self.folder / output_name(item.rel, self.fmt)]
        return [self.folder / output_name(item.rel, self.fmt, k) for k in range(num_images)]

    def claim(self, item: InputItem, num_images: int, taken: set[Path], name: PurePath | None = None) -> list[Path]:
        """:meth:`paths_for`, told apart from the paths already in ``taken`` (which it adds
        them to): two inputs that would share an output name (``cat.jpg`` and ``cat.png``) get
        their source extension (``cat.png``, ``cat-png.png``), then ``-2``, ``-3``..."""
        paths = self.paths_for(item, num_images, name)
        if any(p in taken for p in paths):
            alt = InputItem(item.path, item.rel.with_name(f"{item.rel.stem}-{item.rel.suffix.lstrip('.').lower()}"))
            paths = self.paths_for(alt, num_images, None)
            k = 2
            while any(p in taken for p in paths):
                alt = InputItem(item.path, item.rel.with_name(f"{item.rel.stem}-{k}"))
                paths = self.paths_for(alt, num_images, None)
                k += 1
        taken.update(paths)
        return paths
