"""The ``img2img`` command line (Typer).

Thin by design (``STYLE.md`` habit 1): each command parses options, builds a
:class:`~img2img_cli.config.Job`, calls the core and prints. torch and diffusers are
imported lazily inside the core, so ``img2img --help`` stays fast and never imports them.
Domain errors (:class:`~img2img_cli.errors.Img2ImgError`) become one line on stderr and
their exit code; ``IMG2IMG_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click as typer._click
    from typer._click import exceptions as _cx
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as _cx

from . import __version__
from .config import DEFAULT_GUIDANCE, DEFAULT_MODEL, DEFAULT_STEPS, DEFAULT_STRENGTH, Job, parse_size
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

# --- options, declared once (huggingface_hub cli/_cli_utils.py style) -------------------

Inputs = Annotated[
    list[Path],
    typer.Argument(help="Image files or folders (a folder's images, sorted).", show_default=False),
]
Prompt = Annotated[str, typer.Option("--prompt", "-p", help="Text prompt.")]
NegativePrompt = Annotated[str, typer.Option("--negative-prompt", "-n", help="Negative prompt (what to steer away from).")]
Strength = Annotated[
    float,
    typer.Option("--strength", "-s", help="Denoising strength, 0 < s <= 1: how far the image is noised before denoising."),
]
Steps = Annotated[int, typer.Option("--steps", help="Scheduler steps for a full denoise (>= 1); int(steps * strength) run.")]
Guidance = Annotated[float, typer.Option("--guidance", "-g", "--cfg-scale", help="Classifier-free guidance scale (CFG), 0-100; <= 1 disables guidance.")]
Seed = Annotated[
    Optional[int],
    typer.Option("--seed", help="Seed in [0, 2^32-1]; image k of -N uses seed+k. Default: random, recorded in metadata.", show_default=False),
]
Scheduler = Annotated[Optional[str], typer.Option("--scheduler", "--sampler", help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M Karras' (see `img2img schedulers`). Default: the model's own.", show_default=False)]
NumImages = Annotated[int, typer.Option("--num-images", "-N", help="Images per input (>= 1).")]
Model = Annotated[
    str,
    typer.Option("--model", "-m", envvar="IMG2IMG_MODEL", help="`tiny`, a diffusers folder, a .safetensors checkpoint or a hub repo id."),
]
ModelConfig = Annotated[Optional[str], typer.Option("--model-config", help="For a .safetensors file: sd15, sd2, sd2-base, sdxl, sdxl-refiner or a diffusers folder (default: inferred).", show_default=False)]
Device = Annotated[Literal["auto", "cpu", "cuda", "mps"], typer.Option("--device", help="auto: cuda, then mps, then cpu.")]
Dtype = Annotated[Literal["auto", "fp32", "fp16", "bf16"], typer.Option("--dtype", help="auto: fp16 on cuda/mps, fp32 on cpu.")]
Width = Annotated[Optional[int], typer.Option("--width", "-W", help="Output width in px (multiple of 8).", show_default=False)]
Height = Annotated[Optional[int], typer.Option("--height", "-H", help="Output height in px (multiple of 8).", show_default=False)]
Size = Annotated[Optional[str], typer.Option("--size", help="Output size WxH, e.g. 512x768.", show_default=False)]
Resize = Annotated[Literal["crop", "just", "fill"], typer.Option("--resize", help="How the input meets another aspect ratio: crop (crop and resize), just (stretch), fill (resize and fill).")]
Output = Annotated[Optional[Path], typer.Option("--output", "-o", help="Output folder (default outputs/), or a file when there is one input and one image.", show_default=False)]
Format = Annotated[Optional[Literal["png", "jpg", "webp"]], typer.Option("--format", "-f", help="Output format (default: from -o FILE, else png).", show_default=False)]
Quality = Annotated[int, typer.Option("--quality", help="JPEG/WebP quality, 1-100.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (inputs are never written).")]
SkipExisting = Annotated[bool, typer.Option("--skip-existing", help="Skip inputs whose outputs exist (resume a run).")]
Recursive = Annotated[bool, typer.Option("--recursive", "-r", help="Include images in subfolders (output keeps the relative path).")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object per written file to stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary.")]
Style = Annotated[Optional[str], typer.Option("--style", help="Style preset from prompts/ (see `img2img styles`).", show_default=False)]
StylesFile = Annotated[Optional[Path], typer.Option("--styles-file", help="AUTOMATIC1111 styles.csv (name,prompt,negative_prompt) for --style; a prompts/*.txt preset of the same name wins.", show_default=False)]
PromptFile = Annotated[Optional[Path], typer.Option("--prompt-file", help="Style preset file (prompt: / negative: lines with {prompt}).", show_default=False)]
BatchSize = Annotated[str, typer.Option("--batch-size", "-b", help="Images per pipeline call, or auto (8 on CUDA for SD 1.x, 1 for SD-size models on CPU; see README).")]
Report = Annotated[Optional[Path], typer.Option("--report", help="Append one JSON line per input (status, outputs, seed, parameters, error, seconds) to this file.", show_default=False)]
Jobs = Annotated[Optional[Path], typer.Option("--jobs", help="CSV or JSONL file of inputs with per-row prompt, negative_prompt, seed, strength, steps, guidance_scale, output.", show_default=False)]
Sidecar = Annotated[bool, typer.Option("--prompt-from-sidecar", help="Use photo.txt next to photo.jpg as its prompt (falls back to --prompt).")]
Background = Annotated[str, typer.Option("--background", help="Colour that transparent areas are composited onto: a name, #RRGGBB or R,G,B.")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the UNet and VAE decoder (static shapes: batches padded, short side bucketed to a multiple of 64).")]
ChannelsLast = Annotated[bool, typer.Option("--channels-last", help="UNet and VAE in channels_last memory format.")]
FuseQkv = Annotated[bool, typer.Option("--fuse-qkv", help="Fuse the attention Q, K, V projections into one matmul.")]
Offload = Annotated[Optional[Literal["model", "sequential"]], typer.Option("--offload", help="CPU offload for small GPUs: model (one component on the GPU at a time) or sequential (layer by layer).", show_default=False)]
VaeTiling = Annotated[bool, typer.Option("--vae-tiling", help="Decode/encode the VAE in tiles (large images in little GPU memory).")]
MaxPixels = Annotated[int, typer.Option("--max-pixels", help="Refuse inputs with more pixels than this (decompression bombs).")]


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


@app.command(
    epilog="Examples:\n\n"
    "  img2img run photo.jpg -p 'a watercolor painting' -o out.png\n\n"
    "  img2img run photos/ -r --style oil-painting -s 0.6 --seed 42 -o painted/\n\n"
    "  img2img run photo.jpg --model tiny --steps 8 --json",
)
def run(
    inputs: Inputs = None,
    prompt: Prompt = "",
    negative_prompt: NegativePrompt = "",
    strength: Strength = DEFAULT_STRENGTH,
    steps: Steps = DEFAULT_STEPS,
    guidance: Guidance = DEFAULT_GUIDANCE,
    seed: Seed = None,
    scheduler: Scheduler = None,
    num_images: NumImages = 1,
    model: Model = DEFAULT_MODEL,
    model_config: ModelConfig = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    width: Width = None,
    height: Height = None,
    size: Size = None,
    resize: Resize = "crop",
    output: Output = None,
    fmt: Format = None,
    quality: Quality = 95,
    overwrite: Overwrite = False,
    skip_existing: SkipExisting = False,
    recursive: Recursive = False,
    json_out: Json = False,
    quiet: Quiet = False,
    style: Style = None,
    prompt_file: PromptFile = None,
    styles_file: StylesFile = None,
    max_pixels: MaxPixels = 100_000_000,
    batch_size: BatchSize = "auto",
    report: Report = None,
    jobs: Jobs = None,
    prompt_from_sidecar: Sidecar = False,
    background: Background = "white",
    compile_: Compile = False,
    channels_last: ChannelsLast = False,
    fuse_qkv: FuseQkv = False,
    offload: Offload = None,
    vae_tiling: VaeTiling = False,
) -> None:
    """Run image-to-image on each INPUT (files or folders) and write the results."""
    _setup_logging(quiet)
    try:
        summary = _run(**locals())
    except Img2ImgError as e:
        _fail(e)
        return
    if summary.is_main and (not quiet or summary.interrupted):
        typer.echo(summary.line(), err=True)
    raise typer.Exit(summary.exit_code)


def _run(**o):
    from .batch import OutputPlan, RunOptions, collect_inputs, plan_work, run as run_batch
    from .io import display

    if o["max_pixels"] < 1:
        raise UsageError(f"--max-pixels must be at least 1, got {o['max_pixels']}")
    if o["jobs"] is not None and o["inputs"]:
        raise UsageError("--jobs and INPUT arguments contradict each other; list the inputs in the jobs file")
    if not o["inputs"] and o["jobs"] is None:
        raise UsageError("no inputs: give one or more image files or folders (or --jobs FILE)")
    if o["overwrite"] and o["skip_existing"]:
        raise UsageError("--overwrite and --skip-existing contradict each other; pass one")
    background = _parse_colour(o["background"])
    batch_size = None
    if str(o["batch_size"]).strip().lower() != "auto":
        try:
            batch_size = int(o["batch_size"])
        except ValueError:
            batch_size = 0
        if batch_size < 1:
            raise UsageError(f"--batch-size must be a positive integer or auto, got {o['batch_size']!r}")
    width, height = o["width"], o["height"]
    if o["size"]:
        if width or height:
            raise UsageError("--size and --width/--height contradict each other; pass one")
        width, height = parse_size(o["size"])
    if o["style"] and o["prompt_file"]:
        raise UsageError("--style and --prompt-file contradict each other; pass one")
    if o["styles_file"] is not None and not o["style"]:
        raise UsageError("--styles-file needs --style NAME")
    style = None
    if o["style"] or o["prompt_file"]:
        from .styles import load_prompt_file, load_style

        style = load_style(o["style"], o["styles_file"]) if o["style"] else load_prompt_file(o["prompt_file"])
    job = Job(
        prompt=o["prompt"],
        negative_prompt=o["negative_prompt"],
        strength=o["strength"],
        steps=o["steps"],
        guidance_scale=o["guidance"],
        seed=o["seed"],
        num_images=o["num_images"],
        scheduler=o["scheduler"],
        width=width,
        height=height,
        resize_mode=o["resize"],
        fmt=o["fmt"],
        quality=o["quality"],
        model=o["model"],
        device=o["device"],
        dtype=o["dtype"],
    ).validate()
    if job.scheduler:
        from .schedulers import canonical_name

        job = job.replace(scheduler=canonical_name(job.scheduler))
    rows = None
    if o["jobs"] is not None:
        from .batch import InputItem
        from .jobs import load_jobs

        rows = load_jobs(o["jobs"], job)
        items = [InputItem(r.input, Path(r.input.name)) for r in rows]
    else:
        items = collect_inputs(o["inputs"], recursive=o["recursive"])
    plan = OutputPlan.make(o["output"], job.fmt, len(items) * job.num_images)
    work = plan_work(job, items, plan, rows=rows, style=style, prompt_from_sidecar=o["prompt_from_sidecar"])

    from .models import resolve_model

    spec = resolve_model(job.model, o["model_config"])
    from .models import resolve_device

    device = resolve_device(job.device)
    show = not o["quiet"] and sys.stderr.isatty()
    opts = RunOptions(
        output=o["output"],
        overwrite=o["overwrite"],
        skip_existing=o["skip_existing"],
        max_pixels=o["max_pixels"],
        progress=show,
        batch_size=batch_size,
        report=o["report"],
        device=device,
        background=background,
        static_shapes=o["compile_"],
    )
    from .models import Speed

    speed = Speed(
        compile=o["compile_"], channels_last=o["channels_last"], fuse_qkv=o["fuse_qkv"],
        offload=o["offload"], vae_tiling=o["vae_tiling"],
    )

    def load_pipe(device):
        from .models import load_pipeline, native_resolution, resolve_dtype
        from .schedulers import display_name

        pipe = load_pipeline(spec, device=device, dtype=resolve_dtype(job.dtype, device), scheduler=job.scheduler, progress=show, speed=speed)
        return pipe, display_name(pipe.scheduler), spec.name, native_resolution(pipe)

    def emit(outcome, path, seed, seconds):
        if o["json_out"]:
            record = {"input": display(outcome.input), "output": display(path), "seed": seed, "seconds": round(seconds, 3)}
            typer.echo(json.dumps(record, ensure_ascii=False))
        else:
            typer.echo(display(path))

    return run_batch(work, opts, load_pipe=load_pipe, emit=emit)


def _parse_colour(text: str) -> tuple[int, int, int]:
    """``white``, ``#ffffff``, ``#fff`` or ``255,255,255`` -> ``(255, 255, 255)``.

    Raises:
        UsageError: naming ``--background`` and the value.
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 3 and all(p.isdigit() and int(p) <= 255 for p in parts):
        return tuple(int(p) for p in parts)
    from PIL import ImageColor

    try:
        rgb = ImageColor.getrgb(text.strip())
    except ValueError:
        raise UsageError(f"--background: not a colour: {text!r} (try white, #808080 or 128,128,128)") from None
    return tuple(rgb[:3])


@app.command()
def info(
    files: Annotated[list[Path], typer.Argument(help="Images written by img2img (or A1111).", show_default=False)] = None,
    json_out: Json = False,
) -> None:
    """Print the generation parameters (A1111 infotext) stored in image files."""
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
        if json_out:
            typer.echo(json.dumps({"file": display(f), **parse_infotext(text)}, ensure_ascii=False))
        else:
            if len(files) > 1:
                typer.echo(f"==> {display(f)} <==")
            typer.echo(text)
    raise typer.Exit(code)


@app.command()
def schedulers() -> None:
    """List the scheduler (sampler) names --scheduler accepts and their diffusers classes."""
    from .schedulers import SCHEDULERS

    width = max(len(n) for n in SCHEDULERS)
    for name, (cls, kwargs) in SCHEDULERS.items():
        extra = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        typer.echo(f"{name:<{width}}  {cls}{f'({extra})' if extra else ''}")


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
