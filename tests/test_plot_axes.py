"""img2img_cli.plot.axes: X/Y/Z plot axes (A1111 ``scripts/xyz_grid.py`` rules).

Range examples and the Prompt S/R rules are those of AUTOMATIC1111/stable-diffusion-webui
``scripts/xyz_grid.py`` (commit 02d5a43c4b3302505dc58d0c8e2f3a40e3e766b8).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from img2img_cli.config import MAX_SEED, Job
from img2img_cli.errors import UsageError
from img2img_cli.plot import axes as axes_mod
from img2img_cli.plot.axes import (
    AXES,
    AXIS_NAMES,
    MAX_VALUES,
    Axis,
    check_prompt_sr,
    cells,
    count,
    parse_axis,
)


def values(text: str) -> tuple:
    return parse_axis(text, "--x").values


# --- names and labels -------------------------------------------------------------------


def test_axes_names_types_and_labels():
    assert AXIS_NAMES == (
        "strength", "guidance", "steps", "seed", "scheduler", "prompt-sr", "negative-prompt-sr", "size", "clip-skip",
    )
    expected = {
        "strength": (float, "Denoising"),
        "guidance": (float, "CFG Scale"),
        "steps": (int, "Steps"),
        "seed": (int, "Seed"),
        "scheduler": (str, "Sampler"),
        "prompt-sr": (str, "Prompt S/R"),
        "negative-prompt-sr": (str, "Negative prompt S/R"),
        "size": (tuple, "Size"),
        "clip-skip": (int, "Clip skip"),
    }
    assert {n: (AXES[n].type, AXES[n].label) for n in AXIS_NAMES} == expected
    assert AXES["cfg-scale"] is AXES["guidance"]
    assert AXES["sampler"] is AXES["scheduler"]
    assert set(AXES) == set(AXIS_NAMES) | {"cfg-scale", "sampler"}


@pytest.mark.parametrize(
    "text, name, label",
    [
        ("cfg-scale=5", "guidance", "CFG Scale"),
        ("CFG_Scale=5", "guidance", "CFG Scale"),
        ("sampler=Euler", "scheduler", "Sampler"),
        (" Strength =0.5", "strength", "Denoising"),
    ],
)
def test_aliases_resolve_to_canonical_name(text, name, label):
    axis = parse_axis(text, "--y")
    assert (axis.name, axis.label) == (name, label)


# --- ranges (A1111 re_range / re_range_count) ---------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("steps=1-5", (1, 2, 3, 4, 5)),
        ("steps=1-5 (+2)", (1, 3, 5)),
        ("steps=1-6 (+2)", (1, 3, 5)),
        ("steps=10-30 [3]", (10, 20, 30)),
        ("steps=1-10 [4]", (1, 4, 7, 10)),
        ("steps=1-4 [3]", (1, 2, 4)),  # linspace 1, 2.5, 4 truncated as A1111's int(x)
        ("steps=5-1 (-1)", (5, 4, 3, 2, 1)),
        ("steps=5-1 (-2)", (5, 3, 1)),
        ("steps=30-10 [3]", (30, 20, 10)),
        ("steps= 1 - 5 ( +2 ) ", (1, 3, 5)),
        ("steps=1-5 (2)", (1, 3, 5)),  # the step's sign may be left out
        ("steps=10,1-3,20", (10, 1, 2, 3, 20)),
        ("steps=7", (7,)),
        ("steps=+7", (7,)),
        ("strength=0.2-0.8 (+0.2)", (0.2, 0.4, 0.6, 0.8)),
        ("strength=0.2-0.8 [4]", (0.2, 0.4, 0.6, 0.8)),
        ("strength=0.1-1 (+0.1)", (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)),
        ("strength=0.8-0.2 (-0.2)", (0.8, 0.6, 0.4, 0.2)),
        ("strength=.25-.75 (+.25)", (0.25, 0.5, 0.75)),
        ("guidance=1-3", (1.0, 2.0, 3.0)),
        ("guidance=0-1 [4]", (0.0, 0.33333333, 0.66666667, 1.0)),
        ("guidance=7,7.5, 8 ", (7.0, 7.5, 8.0)),
        ("guidance=1e1", (10.0,)),
    ],
)
def test_ranges(text, expected):
    got = values(text)
    assert got == expected
    assert all(type(v) is type(expected[0]) for v in got)


def test_float_range_values_are_rounded():
    # 0.2 + 2 * 0.2 is 0.6000000000000001 in floating point.
    assert 0.2 + 2 * 0.2 != 0.6
    assert values("strength=0.2-0.8 (+0.2)")[2] == 0.6
    assert parse_axis("strength=0.2-0.8 [4]", "--x").text_values == ["0.2", "0.4", "0.6", "0.8"]


def test_count_ranges_match_numpy_linspace():
    np = pytest.importorskip("numpy")
    for start, end, n in [(1, 4, 3), (1, 10, 4), (3, 50, 7), (40, 2, 6), (1, 999, 13)]:
        expected = tuple(int(x) for x in np.linspace(start, end, n).tolist())
        assert values(f"steps={start}-{end} [{n}]") == expected
    for start, end, n in [(0.1, 0.9, 5), (1, 20, 7), (0.05, 1, 11)]:
        expected = tuple(round(x, 8) for x in np.linspace(start, end, n).tolist())
        assert values(f"guidance={start}-{end} [{n}]") == expected


def test_negative_numbers_in_ranges():
    # -1 in a seed range is drawn; the others are kept.
    got = values("seed=-1-2")
    assert got[1:] == (0, 1, 2) and 0 <= got[0] <= MAX_SEED and got[0] not in (0, 1, 2)
    # Both ends negative: parsed as -5..-1 (then refused as seeds, naming the first value).
    with pytest.raises(UsageError, match=r"^--x seed=-5: --seed must be in \[0, 4294967295\], got -5$"):
        parse_axis("seed=-5--1", "--x")
    assert axes_mod._expand("-5--1", int, "--x") == [-5, -4, -3, -2, -1]
    assert axes_mod._expand("-1-1 (+0.5)", float, "--x") == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert axes_mod._expand("-3", int, "--x") == [-3]


# --- CSV quoting -----------------------------------------------------------------------


def test_quoted_values():
    assert values('scheduler="DPM++ 2M Karras","Euler a"') == ("DPM++ 2M Karras", "Euler a")
    # spaces around values are stripped; a quote after a space still quotes
    assert values('scheduler= "DPM++ 2M Karras" , "Euler a" ') == ("DPM++ 2M Karras", "Euler a")
    assert values("scheduler=euler a,dpm++ 2m karras") == ("Euler a", "DPM++ 2M Karras")
    assert values('prompt-sr="red, blue", "green, gold",plain') == ("red, blue", "green, gold", "plain")
    assert values('prompt-sr=say ""hi""') == ('say ""hi""',)
    assert values('prompt-sr="say ""hi""",x') == ('say "hi"', "x")


def test_sr_values_may_contain_equals_and_be_empty():
    assert values("prompt-sr=a=b,c") == ("a=b", "c")
    assert values("prompt-sr=cat,dog,") == ("cat", "dog", "")


# --- seeds -----------------------------------------------------------------------------


def test_seed_minus_one_is_drawn_and_distinct():
    got = values("seed=-1,-1,-1,7")
    assert got[3] == 7
    assert len(set(got)) == 4
    assert all(0 <= s <= MAX_SEED for s in got)


def test_seed_draws_avoid_the_axis_values(monkeypatch):
    draws = iter([7, 9, 9, 11, 7, 12])
    monkeypatch.setattr(axes_mod, "random_seed", lambda: next(draws))
    axis = parse_axis("seed=-1,7,-1,-1", "--x")
    assert axis.values == (9, 7, 11, 12)
    # the drawn numbers are what the grid shows and the infotext records
    assert axis.text_values == ["9", "7", "11", "12"]
    assert axis.infotext("X") == {"X Type": "Seed", "X Values": "9,7,11,12"}


def test_seed_bounds():
    assert values(f"seed=0,{MAX_SEED}") == (0, MAX_SEED)


# --- errors ----------------------------------------------------------------------------

KNOWN = (
    "strength, guidance (cfg-scale), steps, seed, scheduler (sampler), prompt-sr, "
    "negative-prompt-sr, size, clip-skip"
)


@pytest.mark.parametrize(
    "flag, text, message",
    [
        ("--x", "steps", "--x: expected AXIS=V1,V2,... such as strength=0.3,0.5,0.7, got 'steps'"),
        ("--y", "foo=1,2", f"--y foo=1,2: unknown axis 'foo'; choose one of: {KNOWN}"),
        ("--z", "=1,2", f"--z =1,2: unknown axis ''; choose one of: {KNOWN}"),
        ("--x", "strength=", "--x strength=: no values; give one or more, separated by commas"),
        ("--x", "steps= , ", "--x steps= , : no values; give one or more, separated by commas"),
        ("--x", "steps=1,,2", "--x steps=1,,2: empty value"),
        ("--x", "steps=abc", "--x steps=abc: not an integer or a range such as 1-5, 1-5 (+2) or 10-30 [3]"),
        ("--x", "steps=1.5", "--x steps=1.5: not an integer or a range such as 1-5, 1-5 (+2) or 10-30 [3]"),
        ("--x", "seed=12a", "--x seed=12a: not an integer or a range such as 1-5, 1-5 (+2) or 10-30 [3]"),
        ("--y", "strength=high", "--y strength=high: not a number or a range such as 1-5, 1-5 (+2) or 10-30 [3]"),
        ("--x", "strength=1.5", "--x strength=1.5: --strength must be in (0, 1], got 1.5"),
        ("--x", "strength=0", "--x strength=0.0: --strength must be in (0, 1], got 0.0"),
        ("--x", "strength=nan", "--x strength=nan: --strength must be in (0, 1], got nan"),
        ("--x", "strength=0.5-1.5 (+0.5)", "--x strength=1.5: --strength must be in (0, 1], got 1.5"),
        (
            "--x", "strength=0.0001",
            "--x strength=0.0001: runs no denoising step even at --steps 999 (int(steps * strength) = 0)",
        ),
        ("--x", "guidance=101", "--x guidance=101.0: --guidance must be in [0, 100], got 101.0"),
        ("--x", "cfg-scale=-1", "--x cfg-scale=-1.0: --guidance must be in [0, 100], got -1.0"),
        ("--x", "steps=0", "--x steps=0: --steps must be at least 1, got 0"),
        (
            "--x", "steps=1000",
            "--x steps=1000: --steps must be at most 999 (the schedulers have 1000 training timesteps), got 1000",
        ),
        ("--x", "seed=-2", "--x seed=-2: --seed must be in [0, 4294967295], got -2"),
        ("--x", f"seed={MAX_SEED + 1}", f"--x seed={MAX_SEED + 1}: --seed must be in [0, 4294967295], got {MAX_SEED + 1}"),
        ("--x", "steps=5-1", "--x steps=5-1: the range is empty (a descending range needs a negative step such as (-1))"),
        ("--x", "steps=1-5 (-1)", "--x steps=1-5 (-1): the range is empty"),
        ("--x", "steps=1-5 (+0)", "--x steps=1-5 (+0): the range's step must not be 0"),
        ("--x", "strength=0.1-0.5 (0.0)", "--x strength=0.1-0.5 (0.0): the range's step must not be 0"),
        ("--x", "steps=1-3 [0]", "--x steps=1-3 [0]: the range is empty ([0] values)"),
        ("--x", "seed=0-4294967295", f"--x seed=0-4294967295: 4294967296 values; an axis takes at most {MAX_VALUES}"),
        ("--x", "steps=1-9 [20000]", f"--x steps=1-9 [20000]: 20000 values; an axis takes at most {MAX_VALUES}"),
        ("--x", "size=500x768", "--x size=500x768: --width must be a multiple of 8, got 500 (try 496)"),
        ("--x", "size=512x9000", "--x size=512x9000: --height must be in [8, 8192], got 9000"),
        ("--x", "size=big", "--x size=big: expected WIDTHxHEIGHT such as 512x768, got 'big'"),
        ("--x", "size=512", "--x size=512: expected WIDTHxHEIGHT such as 512x768, got '512'"),
        ("--x", "prompt-sr=,dog", "--x prompt-sr=,dog: the first value (the search string) must not be empty"),
        (
            "--x", "negative-prompt-sr=,x",
            "--x negative-prompt-sr=,x: the first value (the search string) must not be empty",
        ),
    ],
)
def test_errors(flag, text, message):
    with pytest.raises(UsageError) as info:
        parse_axis(text, flag)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_unknown_scheduler():
    with pytest.raises(UsageError) as info:
        parse_axis('sampler="Euler a",Eulr', "--y")
    msg = str(info.value)
    assert msg.startswith("--y sampler=Eulr: unknown scheduler 'Eulr'; choose one of: Euler a, Euler, LMS, ")
    assert "DPM++ 2M Karras" in msg and "\n" not in msg


def test_too_many_values_in_a_list():
    with pytest.raises(UsageError, match=f"at most {MAX_VALUES}"):
        parse_axis("steps=" + ",".join(["1-999"] * 11), "--x")


def test_combinations_are_left_to_the_cell_job():
    # steps=1 is valid (with --strength 1); with the default strength 0.75 the cell's job fails.
    axis = parse_axis("steps=1,20", "--x")
    job, _, _ = axis.apply(Job(), "", "", 0)
    with pytest.raises(UsageError, match="runs no denoising step"):
        job.validate()
    axis.apply(Job(strength=1.0), "", "", 0)[0].validate()


# --- Prompt S/R ------------------------------------------------------------------------


def test_prompt_sr_first_cell_keeps_the_prompt():
    axis = parse_axis("prompt-sr=cat,dog,fox", "--x")
    prompt, negative = "a cat and a cat", "cat hair"
    job = Job(prompt="unchanged")
    assert axis.apply(job, prompt, negative, 0) == (job, prompt, negative)
    # every occurrence, in the prompt and in the negative prompt (A1111's apply_prompt)
    assert axis.apply(job, prompt, negative, 1) == (job, "a dog and a dog", "dog hair")
    assert axis.apply(job, prompt, negative, 2) == (job, "a fox and a fox", "fox hair")


def test_prompt_sr_empty_replacement_removes():
    axis = parse_axis("prompt-sr=blurry,", "--x")
    assert axis.apply(Job(), "photo, blurry", "", 1)[1:] == ("photo, ", "")


def test_prompt_sr_is_case_sensitive_as_str_replace():
    axis = parse_axis("prompt-sr=Cat,dog", "--x")
    assert axis.apply(Job(), "Cat cat", "", 1)[1] == "dog cat"


def test_negative_prompt_sr_replaces_only_in_the_negative():
    axis = parse_axis("negative-prompt-sr=blurry,grainy", "--x")
    assert axis.label == "Negative prompt S/R"
    assert axis.apply(Job(), "blurry photo", "blurry", 0)[1:] == ("blurry photo", "blurry")
    assert axis.apply(Job(), "blurry photo", "blurry", 1)[1:] == ("blurry photo", "grainy")


def test_check_prompt_sr():
    axis = parse_axis("prompt-sr=cat,dog", "--x")
    check_prompt_sr(axis, "a cat", "", "--x")
    check_prompt_sr(axis, "a dog", "cat ears", "--x")  # found in the negative prompt only
    with pytest.raises(UsageError) as info:
        check_prompt_sr(axis, "a Cat", "dogs", "--x")
    assert str(info.value) == (
        "--x prompt-sr=cat: Prompt S/R did not find 'cat' in the prompt or negative prompt"
    )


def test_check_negative_prompt_sr():
    axis = parse_axis("negative-prompt-sr=blurry,grainy", "--z")
    check_prompt_sr(axis, "", "blurry", "--z")
    with pytest.raises(UsageError) as info:
        check_prompt_sr(axis, "blurry", "", "--z")
    assert str(info.value) == (
        "--z negative-prompt-sr=blurry: Negative prompt S/R did not find 'blurry' in the negative prompt"
    )


def test_check_prompt_sr_ignores_other_axes():
    check_prompt_sr(parse_axis("steps=5", "--x"), "", "", "--x")


# --- apply -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, i, changes",
    [
        ("strength=0.3,0.6", 1, {"strength": 0.6}),
        ("guidance=5,9", 1, {"guidance_scale": 9.0}),
        ("cfg-scale=5,9", 0, {"guidance_scale": 5.0}),
        ("steps=10-30 [3]", 2, {"steps": 30}),
        ("seed=1,2", 1, {"seed": 2}),
        ("scheduler=euler a,dpm++ 2m karras", 1, {"scheduler": "DPM++ 2M Karras"}),
        ("sampler=DDIM", 0, {"scheduler": "DDIM"}),
        ("size=512x768,768x512", 1, {"width": 768, "height": 512}),
    ],
)
def test_apply_sets_the_job_field(text, i, changes):
    base = Job(prompt="p", negative_prompt="n", seed=42)
    job, prompt, negative = parse_axis(text, "--x").apply(base, "a cat", "blurry", i)
    assert job == base.replace(**changes)
    assert (prompt, negative) == ("a cat", "blurry")
    job.validate()


def test_apply_composes_over_axes():
    x = parse_axis("strength=0.4,0.8", "--x")
    y = parse_axis("prompt-sr=cat,dog", "--y")
    z = parse_axis("size=512x512,512x768", "--z")
    job, prompt, negative = Job(), "a cat", ""
    for axis, i in zip((x, y, z), (1, 1, 1)):
        job, prompt, negative = axis.apply(job, prompt, negative, i)
    assert (job.strength, job.width, job.height, prompt) == (0.8, 512, 768, "a dog")


# --- text values, labels and infotext --------------------------------------------------


def test_text_values_and_grid_labels():
    assert parse_axis("strength=0.5,0.25", "--x").text_values == ["0.5", "0.25"]
    assert parse_axis("guidance=7", "--x").grid_labels == ["CFG Scale: 7.0"]  # A1111 shows floats as floats
    assert parse_axis("steps=20", "--x").grid_labels == ["Steps: 20"]
    assert parse_axis("size=512x768", "--x").grid_labels == ["Size: 512x768"]
    assert parse_axis("strength=0.3", "--x").grid_labels == ["Denoising: 0.3"]
    # Sampler and Prompt S/R show the bare value (A1111's format_value)
    assert parse_axis("sampler=euler a", "--x").grid_labels == ["Euler a"]
    assert parse_axis("prompt-sr=cat,dog", "--x").grid_labels == ["cat", "dog"]


def test_text_values_round_float_noise():
    axis = Axis("strength", (0.6000000000000001, 0.1 + 0.2), "Denoising")
    assert axis.text_values == ["0.6", "0.3"]


@pytest.mark.parametrize(
    "text, letter, expected",
    [
        ("strength=0.2-0.8 (+0.2)", "X", {"X Type": "Denoising", "X Values": "0.2,0.4,0.6,0.8"}),
        ('scheduler="DPM++ 2M Karras",euler a', "Y", {"Y Type": "Sampler", "Y Values": "DPM++ 2M Karras,Euler a"}),
        ('prompt-sr="red, blue",green', "Z", {"Z Type": "Prompt S/R", "Z Values": '"red, blue",green'}),
        ("size=512x512,512x768", "X", {"X Type": "Size", "X Values": "512x512,512x768"}),
    ],
)
def test_infotext_round_trips(text, letter, expected):
    axis = parse_axis(text, "--x")
    info = axis.infotext(letter)
    assert info == expected
    assert parse_axis(f"{axis.name}={info[f'{letter} Values']}", "--x") == axis


# --- cells -----------------------------------------------------------------------------


def test_cells_one_axis():
    x = parse_axis("steps=1,2,3", "--x")
    assert cells([x]) == [(0,), (1,), (2,)]
    assert count([x]) == 3


def test_cells_two_axes_x_fastest():
    x = parse_axis("steps=1,2,3", "--x")
    y = parse_axis("strength=0.5,1", "--y")
    assert cells([x, y]) == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]
    assert count([x, y]) == 6


def test_cells_three_axes_x_then_y_then_z():
    x = parse_axis("steps=1,2", "--x")
    y = parse_axis("strength=0.5,1", "--y")
    z = parse_axis("seed=1,2,3", "--z")
    got = cells([x, y, z])
    assert len(got) == count([x, y, z]) == 12
    # A1111's draw_xyz_grid: image index = ix + iy * nx + iz * nx * ny
    for k, (ix, iy, iz) in enumerate(got):
        assert k == ix + iy * 2 + iz * 2 * 2
    assert got[:5] == [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0), (0, 0, 1)]


def test_cells_no_axes():
    assert cells([]) == [()]
    assert count([]) == 1


# --- no heavy imports ------------------------------------------------------------------


def test_no_torch_import():
    code = (
        "import sys, img2img_cli.plot.axes\n"
        "bad = [m for m in ('torch', 'diffusers', 'numpy') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_clip_skip_axis_sets_the_job_and_is_checked():
    from img2img_cli.config import Job

    axis = parse_axis("clip-skip=1-3", "--x")
    assert axis.values == (1, 2, 3)
    assert axis.apply(Job(), "p", "n", 2)[0].clip_skip == 3
    with pytest.raises(UsageError, match=r"--x clip-skip=13: --clip-skip must be in \[1, 12\], got 13"):
        parse_axis("clip-skip=13", "--x")
