"""Where outputs go: their default names, the checks made before any work (never the input, a folder that
exists and can be written), and the temp file that is renamed onto the output only when it is complete.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from v2v.errors import OutputError
from v2v.media.formats import SEQUENCE_FILE, OutputFormat, default_extension, output_format


def default_output(input_path: Path, fmt: str | None = None) -> Path:
    """NAME.restyled.mp4 beside the input (with ``fmt``: its extension, e.g. .webm; png: the folder NAME.restyled)."""
    return input_path.with_name(f"{input_path.stem}.restyled{default_extension(fmt)}")


def writable(folder: Path) -> bool:
    """Whether a file can be made in ``folder`` (tried: root ignores permission bits, read-only mounts do not)."""
    probe = folder / f".v2v-write-test-{uuid.uuid4().hex[:8]}"
    try:
        probe.open("xb").close()
        probe.unlink()
        return True
    except OSError:
        return False


def check_output_path(input_path: Path, output: str | os.PathLike, fmt: str | None = None,
                      flag: str = "-o") -> Path:
    """The output path, made absolute; an OutputError when it is the input, cannot be written, or is not a
    supported output (by extension, or ``fmt``: a --format name; a folder is a PNG sequence, see v2v.media.formats).
    ``flag``: the option that gave the path, which the messages name."""
    spec = output_format(output, fmt)
    output = Path(output).expanduser()
    try:
        same = output.exists() and input_path.exists() and os.path.samefile(output, input_path)
    except OSError:
        same = False
    if same or output.resolve() == input_path.resolve():
        raise OutputError(f"output '{output}' is the input itself: choose another name with {flag}")
    folder = output.resolve().parent
    if not folder.is_dir():
        raise OutputError(f"output folder '{folder}' does not exist: create it or choose another {flag}")
    if not writable(folder):
        raise OutputError(f"output folder '{folder}' is not writable: choose another {flag}")
    if spec.folder:
        if output.exists() and not output.is_dir():
            raise OutputError(f"output '{output}' is a file, not a folder for the PNG sequence: choose another "
                              f"{flag}")
        if output.is_dir() and not replaceable_folder(output):
            raise OutputError(f"output folder '{output}' holds other files: give an empty or new folder for the "
                              "PNG sequence")
    elif output.is_dir():
        raise OutputError(f"output '{output}' is a folder: give a file name ending in {spec.extensions[0]}, or a "
                          "path ending in / for a PNG sequence")
    return output.resolve()


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temp path beside ``path``; renamed onto it on success, deleted on any failure or Ctrl-C.
    When a folder was made there (a PNG sequence) it replaces ``path`` (absent, empty or an earlier sequence)."""
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.part{path.suffix}")
    try:
        yield tmp
        if tmp.is_dir():
            replace_folder(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException as e:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(e, OutputError) and tmp.name in str(e):  # the writers know only the temp name
            raise OutputError(str(e).replace(tmp.name, path.name)) from None
        raise


def replaceable_folder(folder: Path) -> bool:
    """An existing folder that a PNG sequence may replace: empty, or holding only an earlier sequence."""
    try:
        return all(e.is_file() and SEQUENCE_FILE.fullmatch(e.name) for e in os.scandir(folder))
    except OSError:
        return False


def replace_folder(tmp: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` onto ``target`` (absent, empty, or an earlier sequence, then removed)."""
    if target.is_dir() and any(target.iterdir()):
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


@dataclass(frozen=True)
class PoseOutputs:
    """What `v2v pose` writes, each checked before the detection: absolute paths, None where not asked for."""

    video: Path | None
    video_format: OutputFormat | None
    json: Path | None
    png_dir: Path | None


def check_pose_outputs(input_path: Path, output, json_path, png_dir) -> PoseOutputs:
    """The pose command's outputs (with none given: NAME.pose.mp4 beside the input), each one writable and not
    the input; OutputError naming the fix otherwise."""
    if output is None and json_path is None and png_dir is None:
        output = input_path.with_name(f"{input_path.stem}.pose.mp4")
    video = check_output_path(input_path, output) if output is not None else None
    fmt = output_format(output) if output is not None else None
    json_out = Path(json_path).expanduser().resolve() if json_path is not None else None
    if json_out is not None and (json_out == input_path.resolve() or not json_out.parent.is_dir()):
        raise OutputError(f"cannot write the pose JSON to '{json_out}': choose another --json path")
    if json_out is not None and json_out.is_dir():
        raise OutputError(f"--json '{json_out}' is a folder, not a file: give a file path, e.g. "
                          f"'{json_out / (input_path.stem + '.pose.json')}'")
    if json_out is not None and not writable(json_out.parent):
        raise OutputError(f"cannot write the pose JSON to '{json_out}': its folder is not writable; choose "
                          "another --json path")
    png_out = Path(png_dir).expanduser().resolve() if png_dir is not None else None
    if png_out is not None:
        if png_out.exists() and not png_out.is_dir():
            raise OutputError(f"--png '{png_out}' is a file, not a folder: choose another --png folder")
        existing = next(p for p in (png_out, *png_out.parents) if p.exists())  # made later, parents too
        if not existing.is_dir() or not writable(existing):
            raise OutputError(f"cannot write the PNG maps to '{png_out}': '{existing}' is not writable; "
                              "choose another --png folder")
    return PoseOutputs(video, fmt, json_out, png_out)
