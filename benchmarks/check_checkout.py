"""Fails unless `python` imports anr_codec and anrc from the checkout this script lives in.

The benchmark scripts write numbers into this checkout's results, so they must measure its
code and weights, not those of another checkout (or a deleted clone) that pip's editable
install happens to point at. Run from the benchmark scripts before any measurement.
"""
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    for name in ("anr_codec", "anrc"):
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


if __name__ == "__main__":
    sys.exit(main())
