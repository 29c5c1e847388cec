"""Style presets for ``--style NAME`` (``NAME.txt``; an A1111 ``styles.csv`` also works).

This folder is installed as the package ``img2img_cli.prompts`` (``pyproject.toml``:
``[tool.setuptools.package-dir]``), so an installed copy finds its presets with
``importlib.resources``; see :func:`img2img_cli.styles.styles_dirs`. No code here.
"""
