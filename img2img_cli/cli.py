"""The ``img2img`` command line (Typer).

Thin by design: each command parses options, builds a validated
:class:`~img2img_cli.config.RunConfig` (``run``'s options are declared once, as fields in
:mod:`img2img_cli.config`), calls the core (:func:`img2img_cli.core.run`) and prints. torch and diffusers are
imported lazily inside the core, so ``img2img --help`` stays fast and never imports them.
Domain errors (:class:`~img2img_cli.errors.Img2ImgError`) become one line on stderr and
their exit code; ``IMG2IMG_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click as typer._click
    from typer._click import exceptions as _cx
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as _cx

from . import __version__
from .config import RunConfig, cli_fields
from .errors import Img2ImgError, UsageError

log = logging.getLogger("img2img_cli")


def _debug() -> bool:
    return os.environ.get("IMG2IMG_DEBUG", "").strip() not in ("", "0", "false", "no")


class _OneLineErrors(TyperGroup):
    """Click usage errors as a single stderr line (``img2img: error: ...``), exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
        except _cx.NoArgsIsHelpError as e:
            typer.echo(e.ctx.get_help() if e.ctx else str(e))
            rv = 0
        except _cx.ClickException as e:
            message = " ".join(e.format_message().split())
            value = _raw_value(e, args)
            if value is not None and repr(value) not in message and value not in message:
                message += f" (got {value!r})"
            typer.echo(f"img2img: error: {message}", err=True)
            rv = e.exit_code
        except typer.Abort:
            typer.echo("img2img: aborted", err=True)
            rv = 130
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def _raw_value(e, args) -> str | None:
    """The command-line text given to the option a usage error is about, so the one-line
    message names the bad value too (typer's own messages do not always)."""
    param = getattr(e, "param", None)
    opts = getattr(param, "opts", None) or []
    argv = list(args) if args is not None else sys.argv[1:]
    for i, token in enumerate(argv):
        for opt in opts:
            if not opt.startswith("-"):
                continue
            if token == opt and i + 1 < len(argv):
                return argv[i + 1]
            if token.startswith(opt + "="):
                return token[len(opt) + 1 :]
    return None


app = typer.Typer(
    cls=_OneLineErrors,
    help="Stable Diffusion image-to-image on real photos, from one image to a folder.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (so test runners that
    swap it, and redirections, see our warnings)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def _setup_logging(quiet: bool) -> None:
    """Our warnings as ``img2img: warning: ...`` lines on stderr; library chatter silenced."""
    logger = logging.getLogger("img2img_cli")
    for h in list(logger.handlers):
        if isinstance(h, _StderrHandler):
            logger.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("img2img: %(levelname)s: %(message)s".replace("%(levelname)s", "%(levelname_lower)s")))
    handler.addFilter(_lower_level)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)  # --quiet hides bars and the summary, never a warning
    logger.propagate = False
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def _lower_level(record: logging.LogRecord) -> bool:
    record.levelname_lower = record.levelname.lower()
    return True


def _fail(e: Img2ImgError) -> None:
    if _debug():
        raise e
    typer.echo(f"img2img: error: {e}", err=True)
    raise typer.Exit(e.exit_code)


def _run_signature() -> inspect.Signature:
    """``img2img run``'s parameters, made from the options declared once in
    :mod:`img2img_cli.config` (:func:`~img2img_cli.config.cli_fields` of ``RunConfig`` and of
    every registered mode's options)."""
    from . import modes

    fields = cli_fields(RunConfig)
    for name in modes.MODES:
        options = modes.get(name).options
        if options is not None:
            fields += cli_fields(options)
    return _signature(fields)


def _signature(fields) -> inspect.Signature:
    """A command's parameters from :func:`~img2img_cli.config.cli_fields`: each field becomes
    ``Annotated[type, typer.Option(...)]`` (or ``typer.Argument``)."""
    params = []
    for name, kind, default, meta in fields:
        meta = dict(meta)
        flags, argument = meta.pop("flags"), meta.pop("argument")
        info = typer.Argument(**meta) if argument else typer.Option(*flags, **meta)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None if argument else default, annotation=Annotated[kind, info]))
    return inspect.Signature(params)


def _given(values: dict) -> frozenset:
    """The options of the running command given on its command line or by environment
    variable (click's parameter source), not left at their defaults."""
    try:
        from typer._click.core import ParameterSource
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - older typer on top of click
        from click import get_current_context
        from click.core import ParameterSource
    ctx = get_current_context(silent=True)
    if ctx is None:
        return frozenset()
    explicit = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return frozenset(n for n in values if ctx.get_parameter_source(n) in explicit)


def run(**values) -> None:
    """Run image-to-image on each INPUT (files or folders) and write the results."""

    def core(config, **kwargs):
        from .core import run as run_core

        return run_core(config, **kwargs)

    _execute({**values, "_given": _given(values)}, RunConfig.from_values, core)


def _execute(values: dict, build, core) -> None:
    """Build a command's validated config from its ``values``, run ``core(config, emit=...,
    progress=...)`` and print its summary line; exits with the summary's code."""
    _setup_logging(values.get("quiet", False))
    try:
        config = build(values)
        summary = core(config, emit=_printer(config.json_out), progress=not config.quiet and sys.stderr.isatty())
    except Img2ImgError as e:
        _fail(e)
        return
    if summary.is_main and (not config.quiet or summary.interrupted):
        typer.echo(summary.line(), err=True)
    raise typer.Exit(summary.exit_code)


def _register(command, signature: inspect.Signature, *examples: str) -> None:
    """Add ``command`` (a ``**values`` function) to the app with ``signature`` as its options
    and ``examples`` in its help's epilog."""
    command.__signature__ = signature
    command.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    app.command(epilog="Examples:\n\n" + "\n\n".join(f"  {e}" for e in examples))(command)


_register(
    run, _run_signature(),
    "img2img run photo.jpg -p 'a watercolor painting' -o out.png",
    "img2img run photos/ -r --style oil-painting -s 0.6 --seed 42 -o painted/",
    "img2img run photo.jpg --model tiny --steps 8 --json",
)


def upscale(**values) -> None:
    """Upscale each INPUT (files or folders) with a super-resolution network (ESRGAN family, loaded
    with spandrel) or Lanczos, without diffusion: A1111's Extras tab."""
    from .extras import UpscaleConfig

    def core(config, **kwargs):
        from .extras import run_upscale

        return run_upscale(config, **kwargs)

    _execute(values, UpscaleConfig.from_values, core)


def _upscale_signature() -> inspect.Signature:
    from .extras import UpscaleConfig

    return _signature(cli_fields(UpscaleConfig))


_register(
    upscale, _upscale_signature(),
    "img2img upscale photo.jpg --upscaler RealESRGAN_x4plus.safetensors -o big.png",
    "img2img upscale photos/ -r --upscaler 4x-UltraSharp.pth -x 2 -o upscaled/",
    "img2img upscale photo.jpg -x 2   (Lanczos, no network file)",
)


def _printer(json_out: bool):
    """The results channel: one output path per line on stdout, or one JSON object per line."""
    from .io import display

    def emit(outcome, path, seed, seconds):
        if json_out:
            record = {"input": display(outcome.input), "output": display(path), "seed": seed, "seconds": round(seconds, 3)}
            typer.echo(json.dumps(record, ensure_ascii=False))
        else:
            typer.echo(display(path))

    return emit


@app.command()
def info(
    files: Annotated[list[Path], typer.Argument(help="Images written by img2img (or A1111).", show_default=False)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per file on stdout.")] = False,
) -> None:
    """Print the generation parameters (A1111 infotext) stored in image files, and their
    provenance: the IPTC digital source type (XMP) and any C2PA manifest."""
    from .io import display
    from .metadata import parse_infotext, read_infotext

    if not files:
        _fail(UsageError("no files: give one or more images"))
    code = 0
    for f in files:
        try:
            text = read_infotext(f)
        except OSError as e:
            typer.echo(f"img2img: error: {display(f)}: cannot read ({e.strerror or e})", err=True)
            code = 1
            continue
        if text is None:
            typer.echo(f"img2img: error: {display(f)}: no generation parameters found", err=True)
            code = 1
            continue
        found = _provenance(f)
        if json_out:
            typer.echo(json.dumps({"file": display(f), **parse_infotext(text), **found}, ensure_ascii=False))
            continue
        if len(files) > 1:
            typer.echo(f"==> {display(f)} <==")
        typer.echo(text)
        if found.get("digital_source_type"):
            typer.echo(f"Digital source type: {found['digital_source_type']}")
        if found.get("c2pa"):
            m = found["c2pa"]
            typer.echo(f"C2PA: {m.get('claim_generator')}; actions: {', '.join(m.get('actions') or [])}; {m.get('validation')}")
    raise typer.Exit(code)


def _provenance(path: Path) -> dict:
    """``digital_source_type`` (XMP) and ``c2pa`` (the manifest, when c2pa-python is installed
    and the file has one) of an image; absent keys when it has neither."""
    from .provenance import read_source_type

    found = {}
    source_type = read_source_type(path)
    if source_type:
        found["digital_source_type"] = source_type
    try:
        from .credentials import read_manifest
    except ImportError:
        return found
    manifest = read_manifest(path)
    if manifest:
        found["c2pa"] = manifest
    return found


@app.command()
def schedulers() -> None:
    """List the scheduler (sampler) names --scheduler accepts and their diffusers classes."""
    from .schedulers import SCHEDULERS

    width = max(len(n) for n in SCHEDULERS)
    for name, (cls, kwargs) in SCHEDULERS.items():
        extra = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        typer.echo(f"{name:<{width}}  {cls}{f'({extra})' if extra else ''}")


StylesFile = Annotated[
    Optional[Path],
    typer.Option("--styles-file", show_default=False, help="AUTOMATIC1111 styles.csv (name,prompt,negative_prompt) to list too."),
]


@app.command()
def styles(styles_file: StylesFile = None) -> None:
    """List the style presets --style accepts, with their prompt templates."""
    from .styles import list_styles, load_style

    _setup_logging(False)
    try:
        found = list_styles(styles_file)
    except Img2ImgError as e:
        _fail(e)
    for name, path in found.items():
        try:
            s = load_style(name, styles_file)
        except (Img2ImgError, OSError) as e:
            typer.echo(f"img2img: warning: {path}: {e}", err=True)
            continue
        typer.echo(f"{name}: {s.prompt}")


def _version(value: bool):
    if value:
        typer.echo(f"img2img-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    """Stable Diffusion image-to-image on real photos, from one image to a folder."""


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except Img2ImgError:  # raised again under IMG2IMG_DEBUG
        raise
    except KeyboardInterrupt:
        print("img2img: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        if _debug():
            raise
        print(f"img2img: internal error: {type(e).__name__}: {' '.join(str(e).split())} (set IMG2IMG_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(1)
