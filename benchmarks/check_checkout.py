"""Fails unless `python` imports anr_codec, its weights and anrc from this script's checkout.

The benchmark scripts write numbers into this checkout's results, so they must measure its
code and weights, not those of another checkout (or a deleted clone) that pip's editable
install happens to point at. kodak.sh and kodak_refine.sh run it first; every Python
script beside it, and each paper-study script (paper/) that runs anr_codec code, calls
`require()` before it measures anything.
"""
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    # anr_codec.pretrained is listed apart: with anr_codec on sys.path from one checkout,
    # the editable install still maps the shipped weights to the checkout it points at.
    for name in ("anr_codec", "anr_codec.pretrained", "anrc"):
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            where = f"cannot be imported ({e})"
        else:
            path = Path(module.__file__).resolve()
            if ROOT in path.parents:
                continue
            where = f"is imported from {path.parent}"
        print(f"{name} {where}, not from this checkout ({ROOT}); "
              f"run `pip install --no-deps -e .` in {ROOT} first", file=sys.stderr)
        return 1
    return 0


def require() -> None:
    """Exits with status 1 (after main's message) unless main's check passes."""
    if main():
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
