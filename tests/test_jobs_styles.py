"""Jobs files keep every character of a prompt; A1111 styles.csv files for --style / --styles-file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from img2img_cli.cli import app
from img2img_cli.config import Job
from img2img_cli.errors import UsageError
from img2img_cli.jobs import load_jobs
from img2img_cli.metadata import parse_infotext, read_infotext
from img2img_cli.styles import list_styles, load_style, read_styles_csv, styles_dirs

from .conftest import EXAMPLES

runner = CliRunner()
FAST = ["--model", "tiny", "--steps", "2", "--seed", "1"]
LS = "\u2028"  # LINE SEPARATOR: str.splitlines() splits on it, CSV and JSON do not

# Prompts a jobs file must carry unchanged (each one a line break of some kind).
ODD_PROMPTS = [
    "a cat\non a mat",
    f"a cat{LS}on a mat",
    "a cat\r\non a mat",
    "a cat\x85\x0b\x0c\x1c\x1d\x1e\u2029on a mat",  # the rest of str.splitlines' set
]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def cat(tmp_path) -> Path:
    """A 64x40 copy of chelsea.png, so the tiny model's runs stay small."""
    d = tmp_path / "in"
    d.mkdir()
    with Image.open(EXAMPLES / "chelsea.png") as im:
        im.convert("RGB").resize((64, 40)).save(d / "cat.png")
    return d / "cat.png"


def csv_cell(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


# --------------------------------------------------------------------------- jobs: CSV


def test_csv_jobs_keep_quoted_line_breaks_and_start_lines(cat):
    rows = [f"cat.png,{csv_cell(p)},{i}" for i, p in enumerate(ODD_PROMPTS)]
    jobs = cat.parent / "jobs.csv"
    # A BOM, CRLF row ends and a blank line; rows 0 and 2 span two lines each.
    jobs.write_bytes(("\ufeffinput,prompt,seed\r\n" + rows[0] + "\r\n" + rows[1] + "\r\n\r\n" + rows[2] + "\r\n" + rows[3] + "\r\n").encode())
    got = load_jobs(jobs, Job())
    assert [r.overrides["prompt"] for r in got] == ODD_PROMPTS
    assert [r.overrides["seed"] for r in got] == [0, 1, 2, 3]
    assert [r.line for r in got] == [2, 4, 6, 8]  # where each row starts


def test_csv_jobs_error_names_the_start_line_of_its_row(cat):
    jobs = cat.parent / "jobs.csv"
    jobs.write_text('input,prompt,seed\ncat.png,"two\nlines",1\ncat.png,"three\n\nlines",x\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"jobs\.csv line 4: seed 'x' is not a number"):
        load_jobs(jobs, Job())


@pytest.mark.parametrize(
    "body, needle",
    [
        ('cat.png,"open quote,1\ncat.png,b,2\n', r"line 2: bad CSV \(unexpected end of data\) in the row read from this line to line 3; is a quote left open\?"),
        ('cat.png,ok,1\ncat.png,"a"b,2\n', r"line 3: bad CSV \(',' expected after '\"'\)$"),
    ],
)
def test_csv_jobs_malformed_quotes_are_errors_not_merged_rows(cat, body, needle):
    jobs = cat.parent / "jobs.csv"
    jobs.write_text("input,prompt,seed\n" + body, encoding="utf-8")
    with pytest.raises(UsageError, match=needle):
        load_jobs(jobs, Job())


def test_csv_jobs_header_and_extra_cells(cat):
    jobs = cat.parent / "jobs.csv"
    jobs.write_text("\nprompt\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"line 1: the header must have an 'input' column"):
        load_jobs(jobs, Job())
    jobs.write_text("input,prompt\ncat.png,a,b\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"line 2: more cells than header columns"):
        load_jobs(jobs, Job())
    jobs.write_text("input,prompt,seed\ncat.png\n", encoding="utf-8")  # short row: missing cells are empty
    assert load_jobs(jobs, Job())[0].overrides == {}


# --------------------------------------------------------------------------- jobs: JSONL


def test_jsonl_jobs_split_on_newline_only(cat):
    jobs = cat.parent / "jobs.jsonl"
    lines = [json.dumps({"input": "cat.png", "prompt": p, "seed": i}, ensure_ascii=False) for i, p in enumerate(ODD_PROMPTS)]
    assert LS in lines[1]  # written raw, as json.dumps(ensure_ascii=False) does
    jobs.write_bytes(("\ufeff" + lines[0] + "\r\n\r\n" + "\n".join(lines[1:]) + "\n").encode())
    got = load_jobs(jobs, Job())
    assert [r.overrides["prompt"] for r in got] == ODD_PROMPTS
    assert [r.line for r in got] == [1, 3, 4, 5]
    jobs.write_text(lines[1] + "\n" + '{"input": "cat.png", "seed": "x"}\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"jobs\.jsonl line 2: seed 'x' is not a number"):
        load_jobs(jobs, Job())


# --------------------------------------------------------------------------- jobs: end to end


def _prompts_written(out: Path) -> dict[str, str]:
    return {p.name: parse_infotext(read_infotext(p))["prompt"] for p in sorted(out.iterdir())}


def test_csv_and_jsonl_prompts_reach_the_infotext_unchanged(cat, tmp_path):
    newline, sep = "a cat\non a mat", f"a cat{LS}on a mat"
    jobs = cat.parent / "jobs.csv"
    jobs.write_text(f"input,prompt,output\ncat.png,{csv_cell(newline)},newline\ncat.png,{csv_cell(sep)},sep\n", encoding="utf-8", newline="")
    out = tmp_path / "out"
    r = invoke("run", "--jobs", jobs, *FAST, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert _prompts_written(out) == {"newline.png": newline, "sep.png": sep}

    jl = cat.parent / "jobs.jsonl"
    jl.write_text(json.dumps({"input": "cat.png", "prompt": sep, "output": "sep"}, ensure_ascii=False) + "\n", encoding="utf-8", newline="")
    out2 = tmp_path / "out2"
    r = invoke("run", "--jobs", jl, *FAST, "-o", out2)
    assert r.exit_code == 0, r.stderr
    assert _prompts_written(out2) == {"sep.png": sep}


# --------------------------------------------------------------------------- styles.csv


A1111_CSV = (
    "\ufeffname,prompt,negative_prompt\r\n"
    'Cinematic,"cinematic still of {prompt}, shallow depth of field","cartoon, drawing"\r\n'
    "Film grain, \"film grain, 35mm\",\r\n"  # a space after the comma, as A1111 allows
    "\r\n"
    '"Two lines","first line\r\nsecond line",\r\n'
    ",orphan prompt,\r\n"  # no name: skipped
    "Cinematic,later row wins,\r\n"
    "Short\r\n"
)


def test_read_styles_csv_like_a1111(tmp_path):
    f = tmp_path / "styles.csv"
    f.write_bytes(A1111_CSV.encode())
    styles = read_styles_csv(f)
    assert list(styles) == ["Cinematic", "Film grain", "Two lines", "Short"]
    assert (styles["Cinematic"].prompt, styles["Cinematic"].negative) == ("later row wins", "")
    assert styles["Film grain"].apply("a cat", "ugly") == ("a cat, film grain, 35mm", "ugly")
    assert styles["Two lines"].prompt == "first line\r\nsecond line"
    assert (styles["Short"].prompt, styles["Short"].negative) == ("", "")
    assert styles["Short"].apply("a cat", "") == ("a cat", "")
    # A1111's old two-column format, other columns ignored, any column order.
    f.write_text('extra,text,name\nx,"oil painting of {prompt}",Oil\n', encoding="utf-8")
    assert read_styles_csv(f)["Oil"].apply("a cat", "n") == ("oil painting of a cat", "n")


@pytest.mark.parametrize(
    "body, needle",
    [
        ("title,prompt\nx,y\n", r"^--styles-file \S+styles\.csv line 1: the header must name the columns name,prompt,negative_prompt"),
        ("", r"^--styles-file \S+ line 1: the header"),
        ('name,prompt\na,b\nc,"open\nd,e\n', r"^--styles-file \S+ line 3: bad CSV \(unexpected end of data\) in the row read from this line to line 4"),
    ],
)
def test_bad_styles_csv_is_one_line_naming_flag_file_and_line(tmp_path, body, needle):
    f = tmp_path / "styles.csv"
    f.write_text(body, encoding="utf-8")
    with pytest.raises(UsageError, match=needle) as e:
        load_style("a", f)
    assert "\n" not in str(e.value)


def test_missing_or_undecodable_styles_file(tmp_path):
    with pytest.raises(UsageError, match=r"^--styles-file \S+nope\.csv: cannot read \(FileNotFoundError"):
        list_styles(tmp_path / "nope.csv")
    f = tmp_path / "latin1.csv"
    f.write_bytes("name,prompt\ncaf\xe9,x\n".encode("latin-1"))
    with pytest.raises(UsageError, match=r"latin1\.csv: cannot read \(UnicodeDecodeError"):
        load_style("x", f)


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """$IMG2IMG_PROMPTS_DIR = env/, cwd = work/ (so ./prompts = work/prompts)."""
    env, cwd = tmp_path / "env", tmp_path / "work"
    (cwd / "prompts").mkdir(parents=True)
    env.mkdir()
    monkeypatch.setenv("IMG2IMG_PROMPTS_DIR", str(env))
    monkeypatch.chdir(cwd)
    return env, cwd / "prompts"


def test_lookup_order_txt_then_styles_file_then_found_styles_csv(dirs, tmp_path, caplog):
    env, local = dirs
    (env / "styles.csv").write_text("name,prompt\nmine,from env csv\nboth,from env csv\n", encoding="utf-8")
    (local / "styles.csv").write_text("name,prompt\nboth,from local csv\nlocal,from local csv\nwatercolor,csv watercolor\n", encoding="utf-8")
    (local / "mine.txt").write_text("prompt: from local txt\n", encoding="utf-8")
    explicit = tmp_path / "my.csv"
    explicit.write_text("name,prompt\nmine,from --styles-file\nexplicit,from --styles-file\nlocal,from --styles-file\n", encoding="utf-8")

    assert styles_dirs()[:2] == [env, local]
    assert load_style("mine").prompt == "from local txt"  # .txt beats every csv
    assert load_style("both").prompt == "from env csv"  # styles.csv: first folder wins
    assert load_style("local").prompt == "from local csv"
    assert load_style("watercolor").prompt.startswith("watercolor painting of {prompt}")  # packaged .txt beats a csv row
    assert load_style("local", explicit).prompt == "from --styles-file"  # --styles-file beats found styles.csv
    assert load_style("explicit", explicit).prompt == "from --styles-file"

    logger = logging.getLogger("img2img_cli")
    handler = logging.Handler()
    seen: list[str] = []
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        assert load_style("mine", explicit).prompt == "from local txt"
    finally:
        logger.removeHandler(handler)
    assert len(seen) == 1 and "style 'mine' is shadowed by" in seen[0] and "mine.txt" in seen[0]

    found = list_styles(explicit)
    assert found["mine"] == local / "mine.txt" and found["both"] == env / "styles.csv"
    assert found["explicit"] == explicit and found["local"] == explicit
    assert {"watercolor", "anime"} <= set(found)
    assert list(found) == sorted(found, key=lambda n: (n.casefold(), n))
    assert "explicit" not in list_styles() and {"mine", "both", "local"} <= set(list_styles())


def test_unknown_style_lists_csv_names_closest_first(dirs):
    env, _ = dirs
    (env / "styles.csv").write_text("name,prompt\n" + "".join(f"style{i:03},p\n" for i in range(40)) + "Cinematic,c\n", encoding="utf-8")
    with pytest.raises(UsageError) as e:
        load_style("Cinematik")
    message = str(e.value)
    assert message.startswith("--style: unknown style 'Cinematik'; available: Cinematic, ")
    assert message.endswith("more (see `img2img styles`)") and "\n" not in message


def test_broken_found_styles_csv_names_style_flag_but_spares_txt_presets(dirs):
    env, _ = dirs
    (env / "styles.csv").write_text("nom,texte\n", encoding="utf-8")
    assert load_style("watercolor").name == "watercolor"
    with pytest.raises(UsageError, match=r"^--style \S+env/styles\.csv line 1: the header"):
        load_style("nothing-like-it")


def test_packaged_prompts_are_searched_last():
    last = styles_dirs()[-1]
    assert (last / "watercolor.txt").is_file()


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def styles_csv(tmp_path) -> Path:
    f = tmp_path / "my styles.csv"
    f.write_text('name,prompt,negative_prompt\nCinematic,"cinematic still of {prompt}, film","cartoon, {prompt}"\n', encoding="utf-8")
    return f


def test_run_with_styles_file_style(cat, styles_csv, tmp_path):
    out = tmp_path / "o.png"
    r = invoke("run", cat, *FAST, "-p", "a cat", "-n", "blurry", "--style", "Cinematic", "--styles-file", styles_csv, "-o", out)
    assert r.exit_code == 0, r.stderr
    info = parse_infotext(read_infotext(out))
    assert (info["prompt"], info["negative_prompt"]) == ("cinematic still of a cat, film", "cartoon, blurry")


def test_run_styles_file_errors(cat, styles_csv, tmp_path):
    out = tmp_path / "o.png"
    r = invoke("run", cat, *FAST, "--styles-file", styles_csv, "-o", out)
    assert r.exit_code == 2 and r.stderr.strip() == "img2img: error: --styles-file needs --style NAME"
    r = invoke("run", cat, *FAST, "--style", "Cinematic", "--styles-file", tmp_path / "missing.csv", "-o", out)
    assert r.exit_code == 2 and r.stderr.startswith("img2img: error: --styles-file ") and "missing.csv: cannot read" in r.stderr
    r = invoke("run", cat, *FAST, "--style", "Cinematic", "-o", out)
    assert r.exit_code == 2 and "unknown style 'Cinematic'" in r.stderr
    assert not out.exists()


def test_styles_command_lists_styles_file(styles_csv, tmp_path):
    r = invoke("styles", "--styles-file", styles_csv)
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "Cinematic: cinematic still of {prompt}, film" in lines
    assert any(line.startswith("watercolor: watercolor painting of {prompt}") for line in lines)
    assert "Cinematic" not in invoke("styles").stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt\nx\n", encoding="utf-8")
    r = invoke("styles", "--styles-file", bad)
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"img2img: error: --styles-file {bad} line 1: the header")
