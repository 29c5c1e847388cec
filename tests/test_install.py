"""The Makefile's install logic, without installing anything: `make -n` (dry run) and real runs
against a stub Python that only logs how it is called, in a temporary copy of the Makefile.

What is checked: a second `make install` does nothing; TORCH_INDEX / TORCH reach pip as
--index-url and the requirement, and changing them re-installs torch; the default keeps a torch
the environment already has; a $(PYTHON) that imports torch lends its packages to .venv;
`make test` and `make demo` install first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

DEFAULT_SPEC = "keep torch==2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# A stand-in for python: logs its arguments; `-c '...import torch...'` exits $STUB_TORCH (0: torch
# importable), the base-interpreter test exits $STUB_VENV (0: a base interpreter), `-m venv DIR`
# makes DIR/bin/python a copy of itself, site-packages are /base/site-packages and $STUB_PURELIB;
# everything else (pip) succeeds.
STUB = r"""#!/bin/sh
echo "$*" >> "$STUB_LOG"
case "$*" in
  "-m venv"*) for d; do :; done; mkdir -p "$d/bin" && cp "$0" "$d/bin/python"; exit 0 ;;
  *"sys.prefix != sys.base_prefix"*) exit "${STUB_VENV:-0}" ;;
  *"site.getsitepackages"*) echo "/base/site-packages"; exit 0 ;;
  *"sysconfig"*) echo "$STUB_PURELIB"; exit 0 ;;
  *"import torch"*) exit "${STUB_TORCH:-0}" ;;
esac
exit 0
"""


def _env(tmp: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "TORCH", "TORCH_INDEX", "PYTHON", "VENV")}
    env["STUB_LOG"] = str(tmp / "calls.log")
    env.update(extra)
    return env


def make(tmp: Path, *args: str, **env: str) -> str:
    r = subprocess.run(["make", "--no-print-directory", *args], cwd=tmp, env=_env(tmp, **env),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"make {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def calls(tmp: Path) -> list[str]:
    log = tmp / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return lines


def stub(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STUB)
    path.chmod(0o755)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the Makefile and pyproject.toml (nothing installed)."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def installed(project: Path) -> Path:
    """As after a default `make install`: a .venv (stub python) with its stamps up to date."""
    stub(project / ".venv" / "bin" / "python")
    (project / ".venv" / ".torch-spec").write_text(DEFAULT_SPEC + "\n")
    (project / ".venv" / ".torch").touch()
    (project / ".venv" / ".installed").touch()
    t = 1_700_000_000
    for k, name in enumerate(["pyproject.toml", ".venv/.torch-spec", ".venv/.torch", ".venv/.installed"]):
        os.utime(project / name, (t + k, t + k))
    return project


def test_installed_is_up_to_date(installed):
    assert "Nothing to be done for 'install'" in make(installed, "-n", "install")
    assert "pip" not in make(installed, "-n", "test")


def test_dry_run_shows_the_torch_index_and_changes_nothing(installed):
    spec = installed / ".venv" / ".torch-spec"
    before = spec.stat().st_mtime_ns
    out = make(installed, "-n", "install", f"TORCH_INDEX={CPU_INDEX}")
    assert f"install --ignore-installed --no-deps --index-url {CPU_INDEX} 'torch==2.13.0'" in out
    assert f"install --index-url {CPU_INDEX} 'torch==2.13.0'" in out
    assert "uninstall --yes torch" in out
    assert "install -e '.[test]'" in out  # the project after torch
    out = make(installed, "-n", "install", "TORCH_INDEX=https://download.pytorch.org/whl/cu126", "TORCH=torch")
    assert "--index-url https://download.pytorch.org/whl/cu126 'torch'" in out
    assert spec.read_text() == DEFAULT_SPEC + "\n" and spec.stat().st_mtime_ns == before  # a dry run writes nothing


def test_torch_alone_goes_to_the_index(installed):
    out = make(installed, "-n", "install", "TORCH_INDEX=https://example.invalid/whl")
    project_lines = [ln for ln in out.splitlines() if "install -e" in ln]
    assert project_lines and all("--index-url" not in ln for ln in project_lines)


def test_override_reinstalls_torch_once(installed):
    out = make(installed, "install", f"TORCH_INDEX={CPU_INDEX}")
    log = calls(installed)
    assert any(f"--index-url {CPU_INDEX} torch==2.13.0" in c and "--no-deps" in c for c in log), log
    assert any("install -e .[test]" in c for c in log), log
    assert (installed / ".venv" / ".torch-spec").read_text().split() == ["pip", "torch==2.13.0", CPU_INDEX]
    # the same again: nothing
    mtime = (installed / ".venv" / ".torch-spec").stat().st_mtime_ns
    out = make(installed, "install", f"TORCH_INDEX={CPU_INDEX}")
    assert "Nothing to be done" in out and calls(installed) == []
    assert (installed / ".venv" / ".torch-spec").stat().st_mtime_ns == mtime
    # another torch: installed again
    make(installed, "install", f"TORCH_INDEX={CPU_INDEX}", "TORCH=torch==2.12.0")
    assert any(f"--index-url {CPU_INDEX} torch==2.12.0" in c for c in calls(installed))


def test_default_keeps_the_torch_that_is_there(installed):
    make(installed, "install", f"TORCH_INDEX={CPU_INDEX}")
    calls(installed)
    out = make(installed, "install", STUB_TORCH="0")  # back to the default, torch importable
    log = calls(installed)
    assert "keeping the torch" in out
    assert not any("install" in c and "torch" in c.split() for c in log), log
    assert not any("torch==2.13.0" in c for c in log), log
    assert make(installed, "install").strip().endswith("Nothing to be done for 'install'.")


def test_default_installs_the_pin_when_there_is_no_torch(installed):
    (installed / ".venv" / ".torch-spec").write_text("pip torch https://example.invalid\n")
    make(installed, "install", STUB_TORCH="1")
    log = calls(installed)
    torch_installs = [c for c in log if "pip" in c and " install " in f" {c} " and "torch==2.13.0" in c]
    assert torch_installs and all("--index-url" not in c for c in torch_installs), log


def test_test_and_demo_install_first(installed):
    os.utime(installed / "pyproject.toml")  # newer than the stamp
    for target in ("test", "demo"):
        out = make(installed, "-n", target)
        assert "install -e '.[test]'" in out, out
        assert out.index("install -e") < out.index("pytest" if target == "test" else "img2img run")


@pytest.mark.parametrize("torch_there, base, option", [
    ("1", "0", None),                       # no torch: a plain venv
    ("0", "0", "--system-site-packages"),   # a base interpreter with torch: its packages
])
def test_new_venv(project, torch_there, base, option):
    python = stub(project / "base" / "python")
    make(project, ".venv/bin/python", f"PYTHON={python}", STUB_TORCH=torch_there, STUB_VENV=base)
    venv = [c for c in calls(project) if c.startswith("-m venv")]
    assert len(venv) == 1, venv
    assert (option in venv[0]) if option else ("--system-site-packages" not in venv[0])


def test_new_venv_from_a_virtual_environment(project):
    """A $(PYTHON) that is itself a virtual environment with torch: a .pth file in .venv lists
    its site-packages (--system-site-packages would reach only its base interpreter's)."""
    python = stub(project / "base" / "python")
    purelib = project / ".venv" / "lib" / "site-packages"
    purelib.mkdir(parents=True)
    make(project, ".venv/bin/python", f"PYTHON={python}", STUB_TORCH="0", STUB_VENV="1", STUB_PURELIB=str(purelib))
    venv = [c for c in calls(project) if c.startswith("-m venv")]
    assert len(venv) == 1 and "--system-site-packages" not in venv[0], venv
    assert (purelib / "base-env.pth").read_text().split() == ["/base/site-packages"]


@pytest.mark.slow
def test_new_venv_from_a_virtual_environment_imports_its_torch(project):
    """For real (a venv with pip: seconds): from this test's own Python, a venv with torch under
    `make test`, .venv imports the same torch."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("this Python is not a virtual environment")
    pytest.importorskip("torch")
    make(project, ".venv/bin/python", f"PYTHON={sys.executable}")
    r = subprocess.run([str(project / ".venv" / "bin" / "python"), "-c", "import torch; print(torch.__file__)"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    import torch

    assert Path(r.stdout.strip()) == Path(torch.__file__)
