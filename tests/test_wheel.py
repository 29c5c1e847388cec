"""The built wheel works outside the source checkout: presets, tiny model, ``python -m img2img_cli``.

Builds the wheel offline from a copy of the project (``pip wheel --no-deps
--no-build-isolation --no-index``, so the setuptools>=77 of the ``test`` extra must be
importable), installs it with ``pip install --target``, and runs the installed copy from a
folder without ``prompts/``, with ``PYTHONPATH`` pointing at the install only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import EXAMPLES, ROOT

# Left out of the copy the wheel is built from: VCS, caches, earlier build output.
_IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", "outputs", ".pytest_cache", ".hypothesis", ".whl")


def _pip(*args: str, cwd: Path) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    p = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"pip {' '.join(args)}:\n{p.stdout}\n{p.stderr}"


def _installed(*args: str, target: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "IMG2IMG_PROMPTS_DIR", "IMG2IMG_MODEL")}
    env.update(PYTHONPATH=str(target), HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """``(wheel, folder)``: the project's wheel, built from a copy of the checkout, and the
    folder it is installed into."""
    import setuptools

    major = int(setuptools.__version__.split(".")[0])
    assert major >= 77, f"setuptools {setuptools.__version__} < 77: install the test extra (pip install -e '.[test]')"
    tmp = tmp_path_factory.mktemp("wheel")
    src, dist, target = tmp / "src", tmp / "dist", tmp / "site"
    shutil.copytree(ROOT, src, ignore=_IGNORE)
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(src), cwd=tmp)
    (wheel,) = dist.glob("img2img_cli-*.whl")
    _pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel), cwd=tmp)
    return wheel, target


def test_wheel_holds_every_module_and_preset(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "img2img_cli").rglob("*.py")}
    assert modules <= names, f"not in the wheel (add the package to pyproject.toml): {sorted(modules - names)}"
    presets = {f"img2img_cli/prompts/{p.name}" for p in (ROOT / "prompts").iterdir() if p.suffix in (".txt", ".csv")}
    assert presets and presets <= names
    assert "img2img_cli/prompts/__init__.py" in names and "img2img_cli/models/tiny/model_index.json" in names


def test_installed_copy_finds_its_presets_and_runs(installed, tmp_path):
    _, target = installed
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    assert not (cwd / "prompts").exists()

    p = _installed("-c", "import img2img_cli, img2img_cli.styles as s; print(img2img_cli.__file__); print(*s.styles_dirs(), sep='\\n')", target=target, cwd=cwd)
    assert p.returncode == 0, p.stderr
    module, *dirs = p.stdout.splitlines()
    assert Path(module).is_relative_to(target)
    assert Path(dirs[-1]) == target / "img2img_cli" / "prompts"

    p = _installed("-m", "img2img_cli", "styles", target=target, cwd=cwd)
    assert p.returncode == 0, p.stderr
    listed = {line.split(":")[0] for line in p.stdout.splitlines()}
    assert {f.stem for f in (ROOT / "prompts").glob("*.txt")} <= listed

    out = tmp_path / "o.png"
    p = _installed(
        "-m", "img2img_cli", "run", str(EXAMPLES / "chelsea.png"), "-p", "a cat", "--style", "watercolor",
        "--model", "tiny", "--steps", "2", "--seed", "1", "--size", "64x40", "-o", str(out),
        target=target, cwd=cwd,
    )
    assert p.returncode == 0, p.stderr
    from img2img_cli.metadata import parse_infotext, read_infotext
    from img2img_cli.styles import parse_style

    template = parse_style((ROOT / "prompts" / "watercolor.txt").read_text(encoding="utf-8"), "watercolor", "--style")
    info = parse_infotext(read_infotext(out))
    assert (info["prompt"], info["negative_prompt"]) == template.apply("a cat", "")
