"""`anrc` on many files, folders, globs and pipes, with tiny images so it runs in seconds."""

import io
import json

import pytest
from click.testing import CliRunner
from PIL import Image

from anr_codec.container import SIGNATURE, parse, read_header
from anrc import batch
from anrc.main import cli
from conftest import smooth_image


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


def png(path, w=48, h=32, seed=0, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(smooth_image(w, h, seed)).convert(mode).save(path)
    return path


@pytest.fixture
def tree(tmp_path):
    """in/a.png, in/sub/b.png, in/sub/deeper/c.png and a loose x.png."""
    root = tmp_path / "in"
    png(root / "a.png", seed=1)
    png(root / "sub" / "b.png", seed=2)
    png(root / "sub" / "deeper" / "c.png", 40, 24, seed=3, mode="L")
    (root / "notes.txt").write_text("not an image; folders only take images")
    return tmp_path, root, png(tmp_path / "x.png", seed=4)


def summary(stderr):
    return [ln for ln in stderr.splitlines() if ln.startswith("anrc: ") and " files: " in ln]


def test_files_and_recursive_folder_keep_structure(tree):
    tmp, root, loose = tree
    r = invoke("encode", loose, root, "-r", "-o", tmp / "out", "--no-psnr", "-q", "2")
    assert r.exit_code == 0, r.output
    got = sorted(p.relative_to(tmp / "out").as_posix() for p in (tmp / "out").rglob("*") if p.is_file())
    assert got == ["a.anr", "sub/b.anr", "sub/deeper/c.anr", "x.anr"]
    assert read_header((tmp / "out" / "sub" / "deeper" / "c.anr").read_bytes()).mode == "L"
    (line,) = summary(r.stderr)
    assert "4 ok, 0 failed" in line and "bytes" in line and "bpp" in line and line.endswith(" s")


def test_folder_without_r_takes_only_its_own_files_and_outputs_go_beside(tree):
    tmp, root, _ = tree
    r = invoke("encode", root, "--no-psnr")
    assert r.exit_code == 0, r.output
    assert (root / "a.anr").exists() and not (root / "sub" / "b.anr").exists()
    assert "1 ok, 0 failed" in summary(r.stderr)[0]


def test_glob_patterns(tree, monkeypatch):
    tmp, root, _ = tree
    monkeypatch.chdir(tmp)
    # Quoted globs reach anrc unexpanded; `**` keeps the structure below the wildcard-free prefix.
    r = invoke("encode", "in/**/*.png", "-o", "globbed", "--no-psnr")
    assert r.exit_code == 0, r.output
    assert {p.relative_to(tmp / "globbed").as_posix() for p in (tmp / "globbed").rglob("*.anr")} == \
        {"a.anr", "sub/b.anr", "sub/deeper/c.anr"}
    r = invoke("decode", "globbed/*.anr", "-o", "back", "--format", "bmp")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp / "back" / "a.bmp").size == (48, 32)
    r = invoke("encode", "nothing-*.png", "-o", "x")
    assert r.exit_code == 1 and "no files match" in r.stderr


def test_jobs_2_encode_and_decode(tree):
    tmp, root, _ = tree
    r = invoke("encode", root, "-r", "-o", tmp / "anr", "-j", "2", "--no-psnr", "--json")
    assert r.exit_code == 0, r.output
    rows = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [row["path"] for row in rows] == sorted(row["path"] for row in rows)  # input order
    r = invoke("decode", tmp / "anr", "-r", "-o", tmp / "png", "-j", "2", "--scale", "2")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp / "png" / "sub" / "deeper" / "c.png").size == (80, 48)
    assert "3 ok, 0 failed" in summary(r.stderr)[0]


def test_a_failing_file_does_not_stop_the_others(tree):
    tmp, root, loose = tree
    bad = tmp / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    r = invoke("encode", loose, bad, root / "a.png", "-o", tmp / "out", "--no-psnr")
    assert r.exit_code == 1
    assert (tmp / "out" / "x.anr").exists() and (tmp / "out" / "a.anr").exists()
    assert not (tmp / "out" / "broken.anr").exists()
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("anrc: error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "Traceback" not in r.output
    assert "2 ok, 1 failed" in summary(r.stderr)[0]
    # A missing file among good ones fails the same way.
    r = invoke("decode", tmp / "out" / "x.anr", tmp / "missing.anr", "-o", tmp / "dec")
    assert r.exit_code == 1 and (tmp / "dec" / "x.png").exists() and "missing.anr" in r.stderr


def test_two_inputs_with_the_same_output_name(tmp_path):
    png(tmp_path / "a.png")
    png(tmp_path / "a.bmp", seed=5)
    r = invoke("encode", tmp_path / "a.png", tmp_path / "a.bmp", "--no-psnr", "-f")
    assert r.exit_code == 1 and "also the output of" in r.stderr and (tmp_path / "a.anr").exists()


def test_stdin_to_stdout_pipes(codec):
    src = io.BytesIO()
    Image.fromarray(smooth_image(48, 32, 7)).save(src, format="PNG")
    r = invoke("encode", "-", "-o", "-", "-q", "3", input=src.getvalue())
    assert r.exit_code == 0, r.stderr
    expected = codec.encode(src.getvalue())          # the fixture's codec: quality 3, CPU
    assert r.stdout_bytes == expected                # nothing but the .anr bytes
    parse(r.stdout_bytes)                            # and nothing after its IEND chunk
    assert "bpp=" in r.stderr

    r = invoke("decode", "-", "-o", "-", "--format", "png", input=expected)
    assert r.exit_code == 0, r.stderr
    want = io.BytesIO()
    codec.decode(expected).save(want, format="PNG")
    assert r.stdout_bytes == want.getvalue()

    # `-` alone writes to stdout as well, like gzip; --json then goes to stderr.
    r = invoke("decode", "-", "--json", input=expected)
    assert r.exit_code == 0 and r.stdout_bytes.startswith(b"\x89PNG")
    row = json.loads([ln for ln in r.stderr.splitlines() if ln.startswith("{")][-1])
    assert (row["path"], row["output"], row["width"], row["height"]) == ("-", "-", 48, 32)
    r = invoke("info", "-", "--json", input=expected)
    assert r.exit_code == 0 and json.loads(r.stdout)["quality"] == 3


def test_file_to_stdout_keeps_stdout_clean_with_json(tmp_path):
    p = png(tmp_path / "a.png")
    r = invoke("encode", p, "-o", "-", "--json", "--no-psnr")
    assert r.exit_code == 0 and r.stdout_bytes.startswith(SIGNATURE)
    parse(r.stdout_bytes)
    assert json.loads(r.stderr.strip().splitlines()[-1])["output"] == "-"
    assert not (tmp_path / "a.anr").exists()


def test_stdout_terminal_is_refused(tmp_path, monkeypatch):
    p = png(tmp_path / "a.png")
    monkeypatch.setattr(batch, "stdout_is_terminal", lambda: True)
    r = invoke("encode", p, "-o", "-")
    assert r.exit_code == 1 and "terminal" in r.stderr and r.stdout_bytes == b""
    r = invoke("decode", "-", input=b"whatever")
    assert r.exit_code == 1 and "terminal" in r.stderr


def test_stdin_terminal_is_refused(monkeypatch):
    monkeypatch.setattr(batch, "stdin_is_terminal", lambda: True)
    r = invoke("encode", "-", "-o", "-")
    assert r.exit_code == 1 and "terminal" in r.stderr


def test_json_one_object_per_file(tree):
    tmp, root, loose = tree
    r = invoke("encode", loose, root / "a.png", "-o", tmp / "j", "--json")
    assert r.exit_code == 0, r.output
    rows = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert {"path", "output", "width", "height", "mode", "quality", "bytes", "bpp", "seconds",
                "psnr"} <= set(row)
        assert row["output"].endswith(".anr") and row["bytes"] > 0
    r = invoke("decode", tmp / "j", "-o", tmp / "k", "--json", "--size", "24x16")
    rows = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert r.exit_code == 0 and len(rows) == 2 and {(d["width"], d["height"]) for d in rows} == {(24, 16)}
    r = invoke("info", tmp / "j", "--json")
    rows = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert r.exit_code == 0 and len(rows) == 2 and all(d["model"] for d in rows)


def test_usage_errors(tmp_path):
    p = png(tmp_path / "a.png")
    assert invoke("encode", p, p, "-o", "-").exit_code == 2            # stdout takes one file
    assert invoke("encode", "-", p, input=b"").exit_code == 2           # stdin stands alone
    assert invoke("encode", "-", "-o", tmp_path, input=b"").exit_code == 2  # stdin has no name
    assert invoke("decode", "x.anr", "--format", "nope").exit_code == 2
    assert invoke("decode", "x.anr", "-o", "x.png", "--format", "jpg").exit_code == 2
    assert invoke("encode", p, tmp_path, "-o", p).exit_code == 2       # -o a file for a batch


def test_help_shows_examples_and_version():
    for cmd in ("encode", "decode", "info"):
        out = invoke(cmd, "--help").output
        assert "Example" in out and "--json" in out
    assert "-j, --jobs" in invoke("encode", "--help").output
    assert "--format" in invoke("decode", "--help").output
    assert invoke("--version").exit_code == 0
