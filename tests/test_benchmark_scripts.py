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
