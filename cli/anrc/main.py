"""`anrc`: the command-line front end of anr-codec.

Statistics go to stderr (JSON lines with --json on stdout, or on stderr when stdout
carries the data), errors are one line on stderr with exit code 1, usage errors exit 2
(click's convention). Batches and pipes are in batch.py.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import click

EXIT_ERROR = 1


class CliError(Exception):
    """An error to report as one line and exit 1."""


def _fail_cleanly(fn):
    """Turn every expected failure into one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            _die("interrupted", code=130)
        except Exception as e:
            _die(_error_line(e))

    return wrapper


def _error_line(e: BaseException) -> str:
    """One line for an expected failure (also used per file in batches)."""
    from anr_codec import AnrError
    if isinstance(e, (AnrError, CliError)):
        return str(e)
    if isinstance(e, OSError):
        return f"{f'{e.filename}: ' if e.filename else ''}{e.strerror or e}"
    if os.environ.get("ANRC_DEBUG"):  # a bug, not bad input: still one line unless asked for detail
        raise e
    return f"internal error: {type(e).__name__}: {e} (set ANRC_DEBUG=1 for a traceback)"


def _die(msg: str, code: int = EXIT_ERROR):
    click.echo(f"anrc: error: {msg}", err=True)
    sys.exit(code)


def write_atomic(path: Path, data: bytes, force: bool, inputs: list[Path] = ()) -> None:
    """Write via a temporary file in the same folder and rename, so no partial file is left."""
    check_target(path, force, inputs)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_target(path: Path, force: bool, inputs: list[Path] = ()) -> None:
    """Refuse an output that would replace an input, or an existing file without -f."""
    if path.exists():
        if any(_same_file(path, p) for p in inputs):
            raise CliError(f"{path}: refusing to overwrite an input file")
        if not force:
            raise CliError(f"{path} exists (use -f to overwrite)")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _parse_size(value: str | None):
    if value is None:
        return None
    try:
        w, h = value.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT, got {value!r}") from None


def _psnr(a, b) -> float:
    from anr_codec.metrics import psnr  # lazy: the CLI imports no numpy/torch at start-up
    return psnr(a, b)


def _jsonable(stats: dict) -> dict:
    # A lossless result has PSNR inf, which strict JSON (jq, JavaScript) cannot read.
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in stats.items()}


def _report(stats: dict, as_json: bool, data_on_stdout: bool = False, progress=None) -> None:
    """One line per file: JSON on stdout (stderr when stdout carries the data), text on stderr."""
    if as_json:
        text, err = json.dumps(_jsonable(stats)), data_on_stdout
    else:
        rest = " ".join(f"{k}={v}" for k, v in stats.items() if k not in ("path", "output"))
        text, err = f"{stats['path']} -> {stats['output']}: {rest}", True
    if progress is not None:
        progress.line(text, err=err)
    else:
        click.echo(text, err=err)


def _run(plan, work, jobs: int, report, summary: bool = True) -> None:
    """Run one file like a one-file tool (its error ends the command), or a batch that
    reports each failure, goes on, prints a summary and exits 1 if anything failed."""
    from . import batch
    if plan.single:
        item = plan.items[0]
        if item.error is not None:
            raise item.error
        report(work(item), None)
        return
    with batch.workers(jobs):
        ok = batch.run(plan.items, work, jobs=jobs, report=report, describe=_error_line, summary=summary)
    if not ok:
        sys.exit(EXIT_ERROR)


def _check_stdio(plan, data_in: str, data_out: str | None = None) -> None:
    """Binary data never goes to or comes from a terminal (gzip's rule)."""
    from . import batch
    if plan.to_stdout and batch.stdout_is_terminal():
        raise CliError(f"refusing to write {data_out} to a terminal (redirect stdout, or give -o FILE)")
    if plan.items and plan.items[0].src is None and batch.stdin_is_terminal():
        raise CliError(f"refusing to read {data_in} from a terminal (pipe or redirect it into stdin)")


def _read_input(item) -> bytes:
    from . import batch
    return batch.read_stdin() if item.src is None else item.src.read_bytes()


def _write_output(item, data: bytes, force: bool) -> None:
    from . import batch
    if item.dst is None:
        batch.write_stdout(data)
        return
    if item.make_dirs:
        item.dst.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(item.dst, data, force, [item.src] if item.src is not None else [])


def _check_early(item, force: bool) -> None:
    """Skip the network for an output that could not be written anyway (re-running a batch)."""
    if item.dst is not None:
        check_target(item.dst, force, [item.src] if item.src is not None else [])


device_option = click.option("--device", default="auto", show_default=True,
                             type=click.Choice(["auto", "cpu", "cuda"]), help="where the network runs")
model_option = click.option("--model", default=None, help="model name or .pt file (default: the shipped model)")
output_option = click.option(
    "-o", "--output", metavar="PATH",
    help="output file; with several inputs, a folder or a glob, an output folder (created if needed, "
         "subfolders kept); - for stdout")
recursive_option = click.option("-r", "--recursive", is_flag=True,
                                help="folder arguments: take files from their subfolders too")
jobs_option = click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
                           help="files processed at once (worker threads sharing the cores)")
refine_option = click.option(  # 1000 = anr_codec.codec.MAX_REFINE, not imported: --help needs no torch
    "--refine", type=click.IntRange(0, 1000), default=0, show_default=True, metavar="N",
    help="N steps of encoder-side latent refinement: much slower encoding, better quality per "
         "bit; any decoder reads the file (try 40: ~50 s for a 768x512 image on 2 cores)")
progress_option = click.option(
    "--progress/--no-progress", default=None,
    help="report each finished measurement on stderr (default: only on a terminal; elsewhere, "
         "e.g. under nohup, one line per measurement)")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="one JSON object per file on stdout (stderr when -o - writes data there)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="anr-codec", prog_name="anrc")
def cli():
    """anr-codec: a learned image codec you can decode at any resolution.

    \b
    Examples:
      anrc encode photo.png              # writes photo.anr
      anrc decode photo.anr --scale 4    # writes photo.png at 4x the size
      anrc info photo.anr --json
      anrc encode -r photos/ -o anr/ -j 2          # a folder tree, 2 workers
      anrc encode - -o - < a.png > a.anr           # pipes
      anrc decode - -o - --format png < a.anr | display
    """


@cli.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@output_option
@click.option("-q", "--quality", type=int, default=None, help="quality level, 1 = smallest files (see `anrc info --qualities`)")
@recursive_option
@jobs_option
@click.option("-f", "--force", is_flag=True, help="overwrite existing outputs")
@click.option("--psnr/--no-psnr", default=True, show_default=True, help="decode once to report PSNR")
@refine_option
@json_option
@device_option
@model_option
@_fail_cleanly
def encode(inputs, output, quality, recursive, jobs, force, psnr, refine, as_json, device, model):
    """Encode images to .anr files.

    INPUT is an image file, a folder of images, a glob pattern ('*.png', quoted or not)
    or - for stdin. Without -o each output goes beside its input (or to stdout for -).

    \b
    Examples:
      anrc encode kodim23.png -q 5       # kodim23.anr, statistics on stderr
      anrc encode kodim23.png --refine 20  # slower encode, smaller/better file
      anrc encode a.png b.jpg 'more/*.png' -o out/
      anrc encode -r photos/ -o anr/ -j 2 --json > stats.jsonl
      cat a.png | anrc encode - -o - > a.anr
    """
    from anr_codec import Codec

    from . import batch
    suffixes = batch.image_suffixes()
    plan = batch.plan(inputs, output, recursive=recursive, out_suffix=".anr",
                      accept=lambda p: p.suffix.lower() in suffixes)
    _check_stdio(plan, "image data", ".anr data")
    codec = Codec(quality=quality, device=device, model=model, refine=refine)
    codec.model  # load it now: a bad --model fails once, not once per file or worker

    def work(item):
        return _encode_one(codec, item, force, psnr)

    _run(plan, work, jobs, lambda stats, progress: _report(stats, as_json, plan.to_stdout, progress))


def _encode_one(codec, item, force: bool, psnr: bool) -> dict:
    from anr_codec.container import read_header
    from anr_codec.images import open_image, to_planes
    _check_early(item, force)
    t0 = time.perf_counter()
    img = open_image(_read_input(item) if item.src is None else item.src)
    data = codec.encode(img)
    secs = time.perf_counter() - t0
    hd = read_header(data)
    stats = {"path": item.name, "output": item.out_name, "width": hd.width, "height": hd.height,
             "mode": hd.mode, "quality": hd.quality, "bytes": len(data),
             "bpp": round(8 * len(data) / (hd.width * hd.height), 4), "seconds": round(secs, 3)}
    if psnr:
        rgb, _, _ = to_planes(img)
        rec, _, _ = to_planes(codec.decode(data))
        stats["psnr"] = round(_psnr(rgb, rec), 3)
    _write_output(item, data, force)
    return stats


@cli.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@output_option
@click.option("-s", "--scale", type=float, default=None, help="output size as a multiple of the coded size")
@click.option("--size", "size_str", default=None, metavar="WxH", help="output size in pixels")
@click.option("--format", "fmt", default=None, metavar="EXT",
              help="image format (png, jpg, webp, tif, ...) where no output file suffix picks one: "
                   "stdout, default names, -o folders  [default: png]")
@recursive_option
@jobs_option
@click.option("-f", "--force", is_flag=True, help="overwrite existing outputs")
@click.option("--max-pixels", type=int, default=None, help="largest output allowed (default 256 megapixels)")
@json_option
@device_option
@model_option
@_fail_cleanly
def decode(inputs, output, scale, size_str, fmt, recursive, jobs, force, max_pixels, as_json, device, model):
    """Decode .anr files to images, at any resolution.

    INPUT is an .anr file, a folder of them, a glob pattern or - for stdin. Without -o
    each output goes beside its input (or to stdout for -).

    \b
    Examples:
      anrc decode kodim23.anr                   # kodim23.png, coded size
      anrc decode kodim23.anr --scale 4 -o big.png
      anrc decode kodim23.anr --size 1920x1280
      anrc decode -r anr/ -o png/ -j 2 --format webp
      anrc decode - -o - --format png < a.anr > a.png
    """
    from anr_codec import Codec

    from . import batch
    if scale is not None and size_str is not None:
        raise click.UsageError("give --scale or --size, not both")
    size = _parse_size(size_str)
    ext = "." + (fmt or "png").lower().lstrip(".")
    default_format = _format_for_suffix(ext)
    if default_format is None:
        raise click.BadParameter(f"unknown image format {fmt!r}", param_hint="--format")
    plan = batch.plan(inputs, output, recursive=recursive, out_suffix=ext,
                      accept=lambda p: p.suffix.lower() == ".anr")
    dst = plan.items[0].dst if plan.single else None
    if fmt is not None and dst is not None and dst.suffix and _format_for_suffix(dst.suffix) != default_format:
        raise click.UsageError(f"--format {fmt} disagrees with the suffix of {dst}")
    _check_stdio(plan, ".anr data", "image data")
    codec = Codec(device=device, model=model)
    codec.model  # load it now: a bad --model fails once, not once per file or worker

    def work(item):
        target = default_format if item.dst is None or not item.dst.suffix else _format_for(item.dst)
        return _decode_one(codec, item, force, target, scale, size, max_pixels)

    _run(plan, work, jobs, lambda stats, progress: _report(stats, as_json, plan.to_stdout, progress))


def _decode_one(codec, item, force: bool, fmt: str, scale, size, max_pixels) -> dict:
    import io

    from anr_codec.container import read_header
    _check_early(item, force)
    data = _read_input(item)
    t0 = time.perf_counter()
    img = codec.decode(data, scale=scale or 1.0, size=size, max_pixels=max_pixels)
    secs = time.perf_counter() - t0
    hd = read_header(data)
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt)
    except (KeyError, ValueError, OSError) as e:
        raise CliError(f"{item.out_name}: cannot write {fmt} ({e})") from None
    _write_output(item, buf.getvalue(), force)
    return {"path": item.name, "output": item.out_name, "width": img.width, "height": img.height,
            "mode": img.mode, "quality": hd.quality, "bytes": len(data),
            "bpp": round(8 * len(data) / (hd.width * hd.height), 4), "seconds": round(secs, 3)}


def _format_for_suffix(suffix: str) -> str | None:
    """Pillow's writable format for a file suffix, or None."""
    from PIL import Image
    Image.init()
    fmt = Image.EXTENSION.get(suffix.lower())
    return fmt if fmt in Image.SAVE else None


def _format_for(path: Path) -> str:
    fmt = _format_for_suffix(path.suffix)
    if fmt is None:
        raise CliError(f"{path}: unknown image format for suffix {path.suffix or '(none)'!r}")
    return fmt


@cli.command()
@click.argument("inputs", nargs=-1, metavar="[INPUT]...")
@recursive_option
@click.option("--json", "as_json", is_flag=True, help="print one JSON object per file on stdout")
@click.option("--qualities", is_flag=True, help="list the model's quality levels")
@model_option
@_fail_cleanly
def info(inputs, recursive, as_json, qualities, model):
    """Show the header of .anr files (size, mode, quality, model); reads no pixels.

    INPUT is an .anr file, a folder of them, a glob pattern or - for stdin.

    \b
    Examples:
      anrc info kodim23.anr --json
      anrc info -r anr/ --json | jq .bpp
    """
    from anr_codec.container import read_header

    from . import batch
    if not inputs and not qualities:
        raise click.UsageError("give .anr files or --qualities")
    plan = batch.plan(inputs, None, recursive=recursive, out_suffix=None,
                      accept=lambda p: p.suffix.lower() == ".anr")
    _check_stdio(plan, ".anr data")
    if qualities:
        from anr_codec import Codec
        codec = Codec(device="cpu", model=model)
        qs, default = codec.qualities(), codec.default_quality()
        click.echo(json.dumps({"qualities": qs, "default": default}) if as_json
                   else f"{' '.join(map(str, qs))} (default {default})")

    def work(item):
        data = _read_input(item)
        hd = read_header(data)
        return {"path": item.name, **hd.to_dict(), "bytes": len(data),
                "bpp": round(8 * len(data) / (hd.width * hd.height), 4)}

    def report(d, progress):
        text = json.dumps(d) if as_json else "\n".join(
            [f"{d['path']}:"] + [f"  {k}: {v}" for k, v in d.items() if k != "path"])
        progress.line(text, err=False) if progress is not None else click.echo(text)

    if plan.items:
        _run(plan, work, 1, report, summary=False)  # a header listing, not a conversion


@cli.command()
@click.option("-q", "--quality", type=int, default=None, help="quality level")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True)
@click.option("-f", "--force", is_flag=True, help="overwrite existing outputs")
@device_option
@_fail_cleanly
def demo(quality, out_dir, force, device):
    """Encode the bundled sample, decode it at scale 1 and 4, print bpp and PSNR.

    \b
    Example:
      anrc demo -q 3 --out-dir /tmp/anr-demo
    """
    from importlib import resources

    from anr_codec import Codec
    from anr_codec.images import open_image, to_planes
    sample = Path(str(resources.files("anr_codec") / "samples" / "kodim23.png"))
    codec = Codec(quality=quality, device=device)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    img = open_image(sample)
    data = codec.encode(img)
    t1 = time.perf_counter()
    rec = codec.decode(data)
    t2 = time.perf_counter()
    big = codec.decode(data, scale=4)
    t3 = time.perf_counter()
    write_atomic(out_dir / "kodim23.anr", data, force)
    for name, im in (("kodim23.decoded.png", rec), ("kodim23.x4.png", big)):
        import io
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        write_atomic(out_dir / name, buf.getvalue(), force)
    rgb, _, _ = to_planes(img)
    hd = codec.info(data)
    click.echo(f"sample {sample.name} {img.width}x{img.height}, quality {hd.quality}, model {hd.model_name}")
    click.echo(f"  {out_dir / 'kodim23.anr'}: {len(data)} bytes, {8 * len(data) / (img.width * img.height):.4f} bpp, "
               f"encode {t1 - t0:.2f} s")
    click.echo(f"  {out_dir / 'kodim23.decoded.png'}: PSNR {_psnr(rgb, to_planes(rec)[0]):.2f} dB, decode {t2 - t1:.2f} s")
    click.echo(f"  {out_dir / 'kodim23.x4.png'}: {big.width}x{big.height}, decode {t3 - t2:.2f} s")


def _parse_int_list(value: str | None, what: str):
    if value is None:
        return None
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers for {what}, got {value!r}") from None
    if not out:
        raise click.BadParameter(f"no {what} given")
    return out


def _parse_baselines(value: str | None):
    if value is None:
        return None
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    return [] if names == ["none"] else names


def _check_writable(paths, force: bool) -> None:
    """Fail before a long evaluation rather than after it."""
    for p in paths:
        if p is not None and p.exists() and not force:
            raise CliError(f"{p} exists (use -f to overwrite)")


def _progress(wanted: bool | None):
    """A progress counter on stderr: one rewritten line on a terminal, one line per
    measurement elsewhere (a log under nohup), none when not wanted (default: a terminal)."""
    tty = sys.stderr.isatty()
    if not (tty if wanted is None else wanted):
        return None

    def show(done, total, label):
        if tty:
            click.echo(f"\r\033[K[{done}/{total}] {label}" + ("\n" if done == total else ""), err=True, nl=False)
        else:
            click.echo(f"[{done}/{total}] {label}", err=True)
    return show


def _fmt(v, spec: str, width: int, unit: str = "") -> str:
    return ("n/a" if v is None else f"{v:{spec}}{unit}").rjust(width)


def _print_eval_table(result: dict) -> None:
    r = result["codecs"]["anr"]["results"]
    qs = result["codecs"]["anr"]["settings"]["values"]
    refined = f", {result['refine']} refinement steps" if result.get("refine") else ""
    click.echo(f"{result['dataset']}: {len(result['images'])} images, model {result['model']}, "
               f"device {result['device']}{refined}")
    click.echo(f"{'quality':>7} {'bpp':>8} {'PSNR dB':>8} {'MS-SSIM':>8} {'enc s':>7} {'dec s':>7}")
    for i, q in enumerate(qs):
        click.echo(f"{q:>7} {_fmt(r['bpp'][i], '.4f', 8)} {_fmt(r['psnr-rgb'][i], '.2f', 8)} "
                   f"{_fmt(r['ms-ssim-rgb'][i], '.4f', 8)} {_fmt(r['encoding_time'][i], '.3f', 7)} "
                   f"{_fmt(r['decoding_time'][i], '.3f', 7)}")
    bd = {**result["bd"], **{f"{k} (published)": v for k, v in result.get("bd_reference", {}).items()}}
    if bd:
        width = max(len(k) for k in bd)
        click.echo(f"{'anr vs':<{width}} {'BD-rate':>10} {'BD-PSNR':>10}")
        for k, v in bd.items():
            click.echo(f"{k:<{width}} {_fmt(v['bd_rate_percent'], '+.2f', 10, '%')} "
                       f"{_fmt(v['bd_psnr_db'], '+.3f', 10, ' dB')}")
    for note in result["notes"]:
        click.echo(f"note: {note}")


@cli.command("eval")
@click.argument("image_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-q", "--qualities", "qualities_str", default=None, metavar="LIST",
              help="anr qualities to measure, e.g. 1,4,7 (default: all)")
@click.option("--baselines", "baselines_str", default=None, metavar="LIST",
              help="Pillow codecs from jpeg,webp,jpeg2000,avif, or none (default: all this Pillow supports)")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="write every curve, BD figures and notes as JSON (CompressAI-style results)")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False, path_type=Path),
              help="write an RD plot (PNG; needs matplotlib)")
@click.option("--per-image", is_flag=True, help="include one row per image and setting in the JSON")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TSV of published curves (codec, bpp, psnr_rgb[, ms_ssim_rgb]) to plot and compare with")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="only the first N images")
@click.option("--ms-ssim/--no-ms-ssim", default=True, show_default=True,
              help="measure MS-SSIM (the slowest metric; images need sides over 160 px)")
@click.option("-f", "--force", is_flag=True, help="overwrite existing outputs")
@refine_option
@progress_option
@device_option
@model_option
@_fail_cleanly
def eval_(image_dir, qualities_str, baselines_str, json_out, plot_out, per_image, reference, limit, ms_ssim,
          force, refine, progress, device, model):
    """Rate-distortion of anr beside Pillow JPEG, WebP, JPEG 2000 and AVIF on a folder of images.

    Every codec runs in this run on the same images; bpp comes from real encoded bytes.
    Prints bpp/PSNR per quality and the BD-rate / BD-PSNR of anr against each baseline
    (negative BD-rate: anr needs fewer bits).

    \b
    Example:
      anrc eval kodak/ -q 1,4,7 --json rd.json --plot rd.png
      anrc eval kodak/ --limit 4 --baselines jpeg,webp
    """
    from anr_codec import evaluate
    qualities = _parse_int_list(qualities_str, "qualities")
    baselines = _parse_baselines(baselines_str)
    _check_writable([json_out, plot_out], force)
    if plot_out is not None:
        _need("matplotlib", "--plot")
    ref = evaluate.read_reference(reference) if reference else None
    result = evaluate.run_eval(image_dir, qualities, baselines, device=device, model=model, limit=limit,
                               per_image=per_image, reference=ref, ms_ssim=ms_ssim, progress=_progress(progress),
                               refine=refine)
    _print_eval_table(result)
    if json_out is not None:
        write_atomic(json_out, evaluate.to_json(result).encode(), force)
        click.echo(f"wrote {json_out}", err=True)
    if plot_out is not None:
        _write_plot(evaluate, result, plot_out, force)
        click.echo(f"wrote {plot_out}", err=True)


def _need(module: str, option: str) -> None:
    import importlib.util
    if importlib.util.find_spec(module) is None:
        raise CliError(f"{option} needs {module} (pip install 'anr-codec[eval]')")


def _write_plot(evaluate, result: dict, path: Path, force: bool) -> None:
    with tempfile.TemporaryDirectory() as d:  # render aside, then write atomically like every output
        tmp = Path(d) / "plot.png"
        evaluate.plot_rd(result, tmp)
        write_atomic(path, tmp.read_bytes(), force)


def _print_sr_table(result: dict) -> None:
    from anr_codec.evaluate import SR_METHODS
    click.echo(f"{result['dataset']}: {len(result['images'])} images, model {result['model']}, "
               f"quality {result['quality']}, Y-PSNR dB / SSIM-Y (border = scale shaved)")
    click.echo(f"{'scale':>5} {'LR bpp':>7} " + " ".join(f"{m:>17}" for m in SR_METHODS))
    for s, row in result["scales"].items():
        cells = " ".join(f"{row[m]['psnr_y']:6.2f} / {row[m]['ssim_y']:.4f}".rjust(17) for m in SR_METHODS)
        click.echo(f"{'x' + s:>5} {row['bpp_lr']:>7.3f} {cells}")


@cli.command("eval-sr")
@click.argument("image_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--scale", "scales_str", default="2,3,4", show_default=True, metavar="LIST",
              help="integer upscaling factors")
@click.option("-q", "--quality", type=int, default=None, help="anr quality for the LR image (default: the highest)")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="write the results as JSON")
@click.option("--per-image", is_flag=True, help="include one row per image and scale in the JSON")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="only the first N images")
@click.option("-f", "--force", is_flag=True, help="overwrite an existing JSON file")
@progress_option
@device_option
@model_option
@_fail_cleanly
def eval_sr(image_dir, scales_str, quality, json_out, per_image, limit, force, progress, device, model):
    """Super-resolution quality: decode small files straight at a larger size.

    Each HR image is mod-cropped, downscaled by the scale (Pillow bicubic) and encoded;
    the file decoded at the HR size is compared (Y-PSNR, SSIM-Y) with the file decoded
    at its own size then upscaled bicubically, and with the uncompressed LR upscaled
    bicubically.

    \b
    Example:
      anrc eval-sr Set5/ --scale 2,4 -q 7 --json sr.json
    """
    from anr_codec import evaluate
    scales = _parse_int_list(scales_str, "scales")
    _check_writable([json_out], force)
    result = evaluate.run_eval_sr(image_dir, scales, quality, device=device, model=model, limit=limit,
                                  per_image=per_image, progress=_progress(progress))
    _print_sr_table(result)
    if json_out is not None:
        write_atomic(json_out, evaluate.to_json(result).encode(), force)
        click.echo(f"wrote {json_out}", err=True)


if __name__ == "__main__":
    cli()
