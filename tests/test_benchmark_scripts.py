"""The benchmark scripts measure the checkout they live in, never another install."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "benchmarks" / "check_checkout.py"


def run_check(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, cwd=script.parents[1], timeout=120)


def test_check_passes_in_the_installed_checkout():
    # The README's test command installs this checkout in editable mode.
    result = run_check(CHECK)
    assert result.returncode == 0, result.stderr


def test_check_fails_for_a_checkout_python_does_not_import(tmp_path):
    copy = tmp_path / "benchmarks" / "check_checkout.py"
    copy.parent.mkdir()
    shutil.copy(CHECK, copy)
    result = run_check(copy)
    assert result.returncode == 1
    assert "not from this checkout" in result.stderr
    assert str(tmp_path) in result.stderr


def test_benchmark_scripts_run_the_check_and_this_python():
    for name in ("kodak.sh", "kodak_refine.sh"):
        lines = (ROOT / "benchmarks" / name).read_text().splitlines()
        assert "python benchmarks/check_checkout.py" in lines, name
        # A bare `anrc` could be another environment's entry point than `python`'s.
        assert not [l for l in lines if l.lstrip().startswith("anrc ")], name


def test_every_python_benchmark_requires_its_checkout():
    scripts = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if p != CHECK)
    assert len(scripts) >= 10
    for script in scripts:
        assert "check_checkout.require()" in script.read_text(), script.name


def test_paper_study_scripts_that_use_anr_codec_require_their_checkout():
    # faces.py is a module only; report.py reads JSON and imports nothing of anr_codec.
    texts = {p.name: p.read_text() for p in sorted((ROOT / "benchmarks" / "paper").glob("*.py"))}
    scripts = [n for n, t in texts.items() if "anr_codec" in t and '__name__ == "__main__"' in t]
    assert scripts == ["inr_models.py", "rd_compare.py", "train_inr.py"]
    for name in scripts:
        assert "check_checkout.require()" in texts[name], name


def test_a_paper_script_copied_out_of_the_checkout_refuses_to_run(tmp_path):
    paper = tmp_path / "benchmarks" / "paper"
    paper.mkdir(parents=True)
    shutil.copy(CHECK, paper.parent / CHECK.name)
    for name in ("faces.py", "inr_models.py", "train_inr.py"):
        shutil.copy(ROOT / "benchmarks" / "paper" / name, paper / name)
    result = run_check(paper / "train_inr.py", "--steps", "1")
    assert result.returncode == 1
    assert "not from this checkout" in result.stderr


def test_a_benchmark_copied_out_of_the_checkout_refuses_to_run(tmp_path):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    for name in ("check_checkout.py", "bd_table.py"):
        shutil.copy(ROOT / "benchmarks" / name, bench / name)
    # Arguments that would fail later: the check must stop it before they are read.
    result = run_check(bench / "bd_table.py", "missing-a.json", "missing-b.json")
    assert result.returncode == 1
    assert "not from this checkout" in result.stderr
    assert "missing-a.json" not in result.stderr
