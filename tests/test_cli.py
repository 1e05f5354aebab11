import json

import pytest
from click.testing import CliRunner
from PIL import Image

from anrc.main import cli


@pytest.fixture
def run():
    def _run(*args):
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return _run


def test_encode_decode_info(run, png_file):
    r = run("encode", png_file, "-q", "2")
    assert r.exit_code == 0, r.output
    anr = png_file.with_suffix(".anr")
    assert anr.exists() and "bpp=" in r.stderr and "psnr=" in r.stderr
    out = png_file.parent / "big.png"
    r = run("decode", anr, "--scale", "2", "-o", out)
    assert r.exit_code == 0, r.output
    assert Image.open(out).size == (160, 96)
    r = run("decode", anr, "--size", "33x21", "-o", png_file.parent / "s.png")
    assert r.exit_code == 0 and Image.open(png_file.parent / "s.png").size == (33, 21)
    r = run("info", anr, "--json")
    d = json.loads(r.stdout)
    assert r.exit_code == 0 and (d["width"], d["height"], d["quality"]) == (80, 48, 2)


def test_info_lists_the_qualities_and_the_default(run, png_file):
    d = json.loads(run("info", "--qualities", "--json").stdout)
    assert d["qualities"][0] == 1 and d["default"] in d["qualities"]
    r = run("encode", png_file, "--no-psnr")     # no -q: the model's default
    assert r.exit_code == 0, r.output
    assert json.loads(run("info", png_file.with_suffix(".anr"), "--json").stdout)["quality"] == d["default"]
    assert run("info", "--qualities").stdout.strip().endswith(f"(default {d['default']})")


def test_no_silent_overwrite(run, png_file):
    assert run("encode", png_file, "--no-psnr").exit_code == 0
    r = run("encode", png_file, "--no-psnr")
    assert r.exit_code == 1 and "exists" in r.stderr and "Traceback" not in r.output
    assert run("encode", png_file, "--no-psnr", "-f").exit_code == 0
    r = run("encode", png_file, "-o", png_file, "-f")
    assert r.exit_code == 1 and "input" in r.stderr


def test_bad_input_is_one_line_exit_1(run, tmp_path):
    bad = tmp_path / "bad.anr"
    bad.write_bytes(b"\x89ANR\r\n\x1a\nrubbish")
    r = run("decode", bad)
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("anrc: error:")
    assert not (tmp_path / "bad.png").exists()  # no partial output
    txt = tmp_path / "notes.txt"
    txt.write_text("not an image")
    r = run("encode", txt)
    assert r.exit_code == 1 and "not an image" in r.stderr
    r = run("decode", tmp_path / "missing.anr")
    assert r.exit_code in (1, 2) and "Traceback" not in r.output


def test_usage_errors_exit_2(run, png_file):
    assert run("encode").exit_code == 2
    assert run("encode", png_file, "-q", "many").exit_code == 2
    assert run("decode", "x.anr", "--scale", "2", "--size", "3x3").exit_code == 2
    assert run("decode", "x.anr", "--size", "wide").exit_code == 2
    assert run("frobnicate").exit_code == 2


def test_out_of_range_quality_is_an_error(run, png_file):
    r = run("encode", png_file, "-q", "99")
    assert r.exit_code == 1 and "quality" in r.stderr


def test_help_and_version(run):
    r = run("--help")
    assert r.exit_code == 0 and "anrc encode" in r.output
    assert run("--version").exit_code == 0
    assert "Example" in run("decode", "--help").output
