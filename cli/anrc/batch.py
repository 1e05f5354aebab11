"""Many files and pipes for `anrc`: expanding inputs, naming outputs, running workers.

Kept apart from main.py so the commands stay readable. Nothing here imports torch or
the codec at module level: `anrc --help` must stay instant.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import click


@dataclass
class Item:
    """One file to process. `src` None reads stdin; `dst` None writes stdout (or, for
    commands without outputs, nothing)."""
    src: Path | None
    dst: Path | None = None
    make_dirs: bool = False            # create dst's folder (outputs under an -o folder)
    error: OSError | None = None       # found while expanding the arguments

    @property
    def name(self) -> str:
        return "-" if self.src is None else str(self.src)

    @property
    def out_name(self) -> str:
        return "-" if self.dst is None else str(self.dst)


@dataclass
class Plan:
    items: list[Item]
    single: bool       # one plain file or stdin: behave exactly like a one-file tool
    to_stdout: bool    # data goes to stdout, so statistics must not


# -- standard streams ---------------------------------------------------------------

def stdin_is_terminal() -> bool:
    return click.get_binary_stream("stdin").isatty()


def stdout_is_terminal() -> bool:
    return click.get_binary_stream("stdout").isatty()


def read_stdin() -> bytes:
    return click.get_binary_stream("stdin").read()


def write_stdout(data: bytes) -> None:
    out = click.get_binary_stream("stdout")
    try:
        out.write(data)
        out.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): point stdout at devnull so the interpreter's
        # final flush does not print a second error.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        raise OSError(errno.EPIPE, "stdout was closed by the reader (broken pipe)") from None


# -- expanding arguments ------------------------------------------------------------

def image_suffixes() -> set[str]:
    """Suffixes of the formats Pillow can read: what `encode` picks up from folders."""
    from PIL import Image
    Image.init()
    return {ext for ext, fmt in Image.EXTENSION.items() if fmt in Image.OPEN and ext != ".anr"}


def _is_dirlike(output: str) -> bool:
    return output.endswith(("/", os.sep)) or Path(output).is_dir()


def _folder_files(folder: Path, recursive: bool, accept: Callable[[Path], bool]) -> list[Path]:
    if recursive:
        # os.walk does not follow symlinked folders, so a link loop cannot recurse forever.
        found = [Path(root) / f for root, dirs, files in os.walk(folder) for f in files]
    else:
        found = [p for p in folder.iterdir() if p.is_file()]
    return sorted(p for p in found if accept(p))


def _glob_root(pattern: str) -> Path:
    """The folder part of a pattern before its first wildcard: matches keep their
    structure below it, as files under a folder argument do."""
    parts = Path(pattern).parts
    k = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    return Path(*parts[:k]) if k else Path(".")


def _expand(arg: str, recursive: bool, accept: Callable[[Path], bool]) -> list[tuple[Path, Path] | OSError]:
    """-> (file, path relative to the argument's folder) pairs, or an error for the argument."""
    p = Path(arg)
    if p.is_dir():
        files = _folder_files(p, recursive, accept)
        if not files:
            hint = "" if recursive else " (use -r for subfolders)"
            return [FileNotFoundError(errno.ENOENT, f"no input files in this folder{hint}", arg)]
        return [(f, f.relative_to(p)) for f in files]
    if p.exists() or not glob.has_magic(arg):
        return [(p, Path(p.name))]  # a missing file fails on its own, later, like any other
    root = _glob_root(arg)
    out: list = []
    for m in sorted(glob.glob(arg, recursive=True)):   # `**` means what it says, with or without -r
        mp = Path(m)
        if mp.is_dir():
            out += [(f, f.relative_to(root)) for f in _folder_files(mp, recursive, accept)]
        else:
            out.append((mp, mp.relative_to(root)))
    return out or [FileNotFoundError(errno.ENOENT, "no files match this pattern", arg)]


def plan(args: Iterable[str], output: str | None, *, recursive: bool, accept: Callable[[Path], bool],
         out_suffix: str | None) -> Plan:
    """Turn the command line into items. `out_suffix` None: the command writes no files.

    One plain file (or `-`) is a single job: `-o` names the output file unless it is a
    folder. Anything else is a batch: `-o` names a folder, created when needed, and each
    output keeps its path relative to the folder (or wildcard-free prefix) it came from.
    """
    args = list(args)
    writes = out_suffix is not None
    if "-" in args:
        if len(args) > 1:
            raise click.UsageError("- (stdin) must be the only input")
        if not writes or output in (None, "-"):
            return Plan([Item(None)], single=True, to_stdout=writes)
        if _is_dirlike(output):
            raise click.UsageError("stdin has no file name: give -o FILE or -o -")
        return Plan([Item(None, Path(output))], single=True, to_stdout=False)

    single = len(args) == 1 and not Path(args[0]).is_dir() and (
        Path(args[0]).exists() or not glob.has_magic(args[0]))
    if output == "-":
        if not single:
            raise click.UsageError("-o - (stdout) takes one input file")
        return Plan([Item(Path(args[0]))], single=True, to_stdout=True)
    if single and not (output and _is_dirlike(output)):
        src = Path(args[0])
        dst = (Path(output) if output else src.with_suffix(out_suffix)) if writes else None
        return Plan([Item(src, dst)], single=True, to_stdout=False)

    out_dir = Path(output) if output and writes else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise click.UsageError(f"-o {output}: with several inputs -o names a folder, and this is a file")
    items: list[Item] = []
    seen_src: set[str] = set()
    seen_dst: dict[str, str] = {}
    for arg in args:
        for entry in _expand(arg, recursive, accept):
            if isinstance(entry, OSError):
                items.append(Item(Path(arg), error=entry))
                continue
            src, rel = entry
            key = os.path.realpath(src)
            if key in seen_src:    # `*.png a.png`: process a file once
                continue
            seen_src.add(key)
            item = Item(src)
            if writes:
                item.dst = (out_dir / rel if out_dir else src).with_suffix(out_suffix)
                item.make_dirs = out_dir is not None
                dkey = os.path.abspath(item.dst)
                if dkey in seen_dst:
                    item.error = FileExistsError(errno.EEXIST, f"{item.dst} is also the output of "
                                                 f"{seen_dst[dkey]}", str(src))
                else:
                    seen_dst[dkey] = str(src)
            items.append(item)
    return Plan(items, single=single, to_stdout=False)   # single here: one file into an -o folder


# -- running ------------------------------------------------------------------------

@contextlib.contextmanager
def workers(jobs: int):
    """Split the cores between the workers (torch threads per worker = cores // jobs),
    restoring torch's setting afterwards for callers that live on (tests, notebooks)."""
    if jobs <= 1:
        yield
        return
    import torch
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // jobs))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Progress:
    """A progress bar on stderr, drawn only for a person watching a terminal."""

    WIDTH = 24

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.enabled = total > 1 and sys.stderr.isatty()
        self._draw()

    def line(self, text: str, err: bool = True) -> None:
        """Print a line of output (stderr or stdout) above the bar."""
        if self.enabled:
            click.echo("\r\033[K", err=True, nl=False)
        click.echo(text, err=err)
        self._draw()

    def step(self) -> None:
        self.done += 1
        self._draw()

    def _draw(self) -> None:
        if self.enabled:
            fill = self.WIDTH * self.done // self.total
            bar = "=" * fill + (">" if fill < self.WIDTH else "") + " " * (self.WIDTH - fill - 1)
            click.echo(f"\r\033[K[{bar}] {self.done}/{self.total}", err=True, nl=False)

    def close(self) -> None:
        if self.enabled:
            click.echo("\r\033[K", err=True, nl=False)


def _attempt(work: Callable[[Item], dict], item: Item):
    if item.error is not None:
        return item.error
    try:
        return work(item)
    except Exception as e:  # reported per file by the caller; the batch goes on
        return e


def _outcomes(items: list[Item], work, jobs: int):
    """Yield (item, stats or exception) in input order."""
    if jobs <= 1:
        for item in items:
            yield item, _attempt(work, item)
        return
    # Threads, not processes: torch releases the GIL in its kernels, the weights are
    # loaded once and shared read-only, and nothing has to be pickled or re-imported.
    with ThreadPoolExecutor(jobs, thread_name_prefix="anrc") as pool:
        futures = [pool.submit(_attempt, work, item) for item in items]
        try:
            for item, fut in zip(items, futures):
                yield item, fut.result()
        finally:
            for fut in futures:
                fut.cancel()


def run(items: list[Item], work: Callable[[Item], dict], *, jobs: int, report: Callable[[dict, Progress], None],
        describe: Callable[[BaseException], str], summary: bool = True) -> bool:
    """Process every item, reporting each as it finishes and (`summary`) a progress bar
    and a summary at the end on stderr. A failed file is reported in one line and the
    others go on. -> all ok?"""
    t0 = time.perf_counter()
    progress = Progress(len(items) if summary else 0)
    ok: list[dict] = []
    failed = 0
    try:
        for item, out in _outcomes(items, work, jobs):
            if isinstance(out, BaseException):
                failed += 1
                msg = describe(out)
                if not msg.startswith(f"{item.name}: "):  # OSErrors name their file already
                    msg = f"{item.name}: {msg}"
                progress.line(f"anrc: error: {msg}")
            else:
                ok.append(out)
                report(out, progress)
            progress.step()
    finally:
        progress.close()
    if not summary:
        return failed == 0
    secs = time.perf_counter() - t0
    total = sum(s.get("bytes", 0) for s in ok)
    bpps = [s["bpp"] for s in ok if s.get("bpp") is not None]
    mean = f"mean {sum(bpps) / len(bpps):.4f} bpp" if bpps else "mean bpp n/a"
    click.echo(f"anrc: {len(items)} files: {len(ok)} ok, {failed} failed, {total} bytes, {mean}, "
               f"{secs:.2f} s", err=True)
    return failed == 0
