"""BD figures of one `anrc eval --json` run's anr curve against every curve of another run.

    python benchmarks/bd_table.py ANCHOR.json TEST.json

Lets a slow anr setting (e.g. `--refine 20`) be measured without re-running the Pillow
baselines: ANCHOR is a full run (benchmarks/kodak.sh), TEST an anr-only run on the same
images. Its anr curve is compared with ANCHOR's baselines, its plain anr curve and the
published reference curves.
"""

from __future__ import annotations

import json
import sys

from anr_codec.evaluate import bd_against


def main(anchor_path: str, test_path: str) -> None:
    anchor, test = (json.load(open(p)) for p in (anchor_path, test_path))
    if anchor["images"] != test["images"]:
        raise SystemExit("the two runs are on different images")
    curve = test["codecs"]["anr"]["results"]
    label = test["codecs"]["anr"]["description"]
    others = {k: c["results"] for k, c in anchor["codecs"].items()}
    others.update({f"{k} (published)": c for k, c in anchor.get("reference", {}).items()})
    print(f"{label}\nagainst {anchor_path} (its anr: {anchor['codecs']['anr']['description']}):")
    width = max(len(k) for k in others)
    print(f"{'vs':<{width}} {'BD-rate':>9} {'BD-PSNR':>9}")
    for k, r in others.items():
        bd = bd_against(r, curve)
        rate = "n/a" if bd["bd_rate_percent"] is None else f"{bd['bd_rate_percent']:+.1f}%"
        psnr = "n/a" if bd["bd_psnr_db"] is None else f"{bd['bd_psnr_db']:+.2f} dB"
        print(f"{k:<{width}} {rate:>9} {psnr:>9}")


if __name__ == "__main__":
    import check_checkout  # beside this script: measure this checkout, no other
    check_checkout.require()
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
