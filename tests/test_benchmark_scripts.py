"""The benchmark scripts measure the checkout they live in, never another install."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "benchmarks" / "check_checkout.py"


def run_check(script: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=script.parents[1], timeout=120)


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


def test_speed_benchmark_runs_the_check_before_measuring():
    text = (ROOT / "benchmarks" / "speed.py").read_text()
    assert "if check_checkout.main():" in text
