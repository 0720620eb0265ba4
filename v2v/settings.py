"""Reproducibility: the record of a restyle run, embedded in the output and written beside it, and read back.

Every restyle writes one record (a JSON object):

* embedded in the output's metadata: tag ``v2v_settings`` (the whole record as JSON; mp4 writes it as a custom
  ``mdta`` tag, which ffprobe and PyAV read back) and a short human ``comment``;
* as a sidecar beside the output: ``NAME.restyled.json`` for ``NAME.restyled.mp4`` (the output's name with
  ``.json``), written to a temp file and renamed.

The record::

    {"schema": "v2v.settings", "version": 1,          # SCHEMA / SCHEMA_VERSION
     "prompt": "...", "seed": 0,
     "options": {...},          # every other RestyleOptions field (RestyleOptions.settings(), paths absolute)
     "models": {"base": {"spec": "emilianJR/epiCRealism", "repo": "...", "revision": "<commit>"} |
                        {"spec": "...", "path": "/abs", "size": n, "mtime": "...", "sha256": "..."}, ...},
     "input": {"path": "/abs/clip.mp4", "name": "clip.mp4", "size": n, "fingerprint": "full:<sha256>"},
     "output": "clip.restyled.mp4",
     "v2v": "0.1.0", "runtime": {"python", "torch", "diffusers", ..., "device", "dtype"}, "created": "..."}

``v2v restyle [INPUT] --settings FILE`` reruns a record (FILE is the sidecar JSON or a video v2v wrote):
:func:`load_settings` returns its options (prompt and seed included; output paths such as ``keep_pose`` are not
taken from it) and the recorded input path. A record with another ``schema``, a newer ``version`` or keys this
version does not know is an ``InvalidOptions`` error, never half-read.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import uuid
from pathlib import Path

from .errors import InputNotFound, InvalidOptions, OutputError

log = logging.getLogger("v2v")

SCHEMA = "v2v.settings"
SCHEMA_VERSION = 1
METADATA_KEY = "v2v_settings"  # the output's metadata tag holding the record
TOP_KEYS = frozenset({"schema", "version", "prompt", "seed", "options", "models", "input", "output", "v2v",
                      "runtime", "created"})
DERIVED_OPTIONS = frozenset({"lightning_steps", "short_side"})  # written for readers, recomputed on a rerun
NOT_RERUN = frozenset({"keep_pose"})  # outputs: never taken from a record (give them again on the command line)
HASH_LIMIT = 64 << 20  # local model files/folders up to this many bytes are hashed (sha256); larger: size + mtime


# ---------------------------------------------------------------------------------------------- writing
def sidecar_path(output: Path) -> Path:
    """Where the settings JSON of ``output`` goes: the same name with ``.json`` (NAME.restyled.json); beside a
    PNG-sequence folder, the folder's name + ``.json``."""
    output = Path(output)
    if output.suffix.lower() in (".mp4", ".webm", ".mov", ".gif", ".mkv"):
        return output.with_suffix(".json")
    return output.with_name(output.name + ".json")


def check_sidecar(path: Path, protected: list[Path]) -> None:
    """OutputError unless ``path`` may be (over)written: not one of ``protected`` (the input, --pose-json...),
    not a folder, and not an existing file that is something else than a v2v settings file."""
    resolved = Path(path).resolve()
    for p in protected:
        if p is not None and Path(p).expanduser().resolve() == resolved:
            raise OutputError(f"the settings file '{path.name}' would overwrite an input of this run: choose "
                              "another -o")
    if resolved.is_dir():
        raise OutputError(f"the settings file '{path}' is a folder: choose another -o")
    if resolved.exists():
        try:
            ours = json.loads(resolved.read_text(encoding="utf-8")).get("schema") == SCHEMA
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise OutputError(f"'{path}' exists and is not a v2v settings file; v2v writes the run's settings "
                              "there: move it away or choose another -o")


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="seconds")


def _sha256_files(files: list[Path], root: Path | None = None) -> str:
    h = hashlib.sha256()
    for f in files:
        if root is not None:
            h.update(str(f.relative_to(root)).encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def local_record(path: Path) -> dict:
    """Path, size, newest mtime of a local file or folder; sha256 of its bytes when at most HASH_LIMIT."""
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        root = p
    else:
        files, root = [p], None
    stats = [f.stat() for f in files]
    size = sum(s.st_size for s in stats)
    rec = {"path": str(p), "size": size}
    if stats:
        rec["mtime"] = _iso(max(s.st_mtime for s in stats))
    if p.is_dir():
        rec["files"] = len(files)
    if size <= HASH_LIMIT:
        rec["sha256"] = _sha256_files(files, root)
    return rec


def model_record(spec: str | None, files: list[Path] | None = None) -> dict | None:
    """What was loaded for one model spec: hub repo + cached commit (and the files taken from it), or a local
    path with its size, mtime and (small ones) sha256. ``files``: the resolved files, when known."""
    if spec is None:
        return None
    from .models.hub import hub_revision, in_hub_cache, is_local

    spec = str(spec)
    if is_local(spec):
        if not files:
            return {"spec": spec, **local_record(Path(spec))}
        if len(files) == 1:
            return {"spec": spec, **local_record(Path(files[0]))}
        return {"spec": spec, "files": [local_record(Path(f)) for f in files]}
    if files:
        found = [in_hub_cache(Path(f)) for f in files]
        if any(f and f["repo"] != spec for f in found):  # the spec stands for other repos (DWPose's TorchScript
            #                                               files): each file with its own repo and commit
            return {"spec": spec, "sources": [f or {"path": str(Path(p).resolve())} for f, p in zip(found, files)]}
    rec = {"spec": spec, "repo": spec, "revision": hub_revision(spec)}
    if files:
        rec["files"] = sorted({f["file"] for f in found if f})
        revs = {f["revision"] for f in found if f}
        if len(revs) == 1:
            rec["revision"] = revs.pop()
    return rec


def _versions() -> dict:
    import sys
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("torch", "diffusers", "transformers", "huggingface_hub", "onnxruntime", "onnxruntime-gpu", "av"):
        mod = sys.modules.get(pkg)
        version = getattr(mod, "__version__", None)  # the loaded module's own (torch's names its CUDA build)
        try:
            out[pkg] = str(version) if version else metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _device_name(device: str) -> str | None:
    if not str(device).startswith("cuda"):
        return None
    try:
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    except Exception:  # no GPU to ask: the record just lacks the name
        return None


def build_settings(o, models, *, input_path: Path, output_path: Path, device: str, dtype,
                   model_files: dict[str, list[Path]] | None = None) -> dict:
    """The record of one run. ``o``: the validated RestyleOptions (DWPose's runtime concrete); ``models``: the
    run's ModelSet; ``model_files``: resolved files per role where known (motion, pose_model)."""
    from . import __version__
    from .pose.cache import file_fingerprint

    opts = o.settings()
    prompt, seed = opts.pop("prompt"), opts.pop("seed")
    for key in ("pose_json", "keep_pose"):
        if opts.get(key):
            opts[key] = str(Path(opts[key]).expanduser().resolve())
    in_path = Path(input_path).expanduser().resolve()
    try:
        st = in_path.stat()
        fingerprint = file_fingerprint(in_path)
    except OSError as e:  # removed or moved away while it was restyled (the decoder reads an open file)
        raise InputNotFound(f"input '{in_path}' is no longer there ({e.strerror or e}): it was removed or moved "
                            "while it was restyled") from None
    model_files = {**models.resolved_files(o), **(model_files or {})}
    records = {role: model_record(spec, model_files.get(role)) for role, spec in models.specs().items()
               if not (role == "pose_model" and o.pose_json is not None)}
    if o.pose_json is not None:
        records["pose_json"] = local_record(Path(o.pose_json))
    runtime = {**_versions(), "device": str(device), "dtype": str(dtype).replace("torch.", "")}
    gpu = _device_name(device)
    if gpu:
        runtime["gpu"] = gpu
    return {"schema": SCHEMA, "version": SCHEMA_VERSION, "prompt": prompt, "seed": seed, "options": opts,
            "models": records,
            "input": {"path": str(in_path), "name": in_path.name, "size": st.st_size, "mtime": _iso(st.st_mtime),
                      "fingerprint": fingerprint},
            "output": Path(output_path).name, "v2v": __version__, "runtime": runtime,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def to_json(record: dict) -> str:
    return json.dumps(record, indent=2, ensure_ascii=False, default=str)


def metadata(record: dict) -> dict[str, str]:
    """The output's metadata tags: a one-line ``comment`` and the whole record under METADATA_KEY."""
    comment = (f"v2v {record.get('v2v')} restyle; prompt: {record.get('prompt')}; seed: {record.get('seed')}; "
               f"steps: {record.get('options', {}).get('steps')}")
    return {"comment": comment, METADATA_KEY: json.dumps(record, ensure_ascii=False, separators=(",", ":"),
                                                         default=str)}


def write_sidecar(path: Path, record: dict) -> Path:
    """Write the record to ``path`` atomically (temp file beside it, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(to_json(record) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write the settings file '{path}' ({e.strerror or e}): check the folder") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------- reading
@dataclasses.dataclass
class Recorded:
    """A record read back: the options to rerun with (RestyleOptions fields, prompt and seed included), the
    recorded input path, and the whole record."""

    options: dict
    input: Path | None
    record: dict
    source: Path


def read_embedded(path: Path) -> dict | None:
    """The record embedded in a video v2v wrote (METADATA_KEY tag), or None when it has none."""
    import av

    try:
        with av.open(str(path)) as c:
            text = dict(c.metadata).get(METADATA_KEY)
    except Exception:  # not a media file PyAV can open
        return None
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def parse_record(record, name: str) -> dict:
    """Check a record's schema, version and keys; returns its options (RestyleOptions fields, typed)."""
    from .options import FIELD_TYPES, coerce, option_names

    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise InvalidOptions(f"'{name}' is not a v2v settings file (no \"schema\": \"{SCHEMA}\"): give the "
                             "NAME.restyled.json that v2v wrote beside an output, or that output itself")
    version = record.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidOptions(f"'{name}': \"version\" must be a whole number, got {json.dumps(version)}")
    if version > SCHEMA_VERSION:
        raise InvalidOptions(f"'{name}' was written by a newer v2v (settings version {version}; this v2v reads "
                             f"up to {SCHEMA_VERSION}): upgrade v2v to rerun it")
    unknown = sorted(set(record) - TOP_KEYS)
    if unknown:
        raise InvalidOptions(f"'{name}': unknown key \"{unknown[0]}\" (this v2v reads settings version "
                             f"{SCHEMA_VERSION}): upgrade v2v, or remove the key")
    opts = record.get("options", {})
    if not isinstance(opts, dict):
        raise InvalidOptions(f"'{name}': \"options\" must be an object")
    known = option_names() - {"prompt", "seed", "extra"}
    unknown = sorted(set(opts) - known - DERIVED_OPTIONS)
    if unknown:
        raise InvalidOptions(f"'{name}': unknown option \"{unknown[0]}\" (not an option of this v2v): upgrade "
                             "v2v, or remove it from \"options\"")
    out = {}
    for key, value in [("prompt", record.get("prompt")), ("seed", record.get("seed")), *opts.items()]:
        if key in DERIVED_OPTIONS or key in NOT_RERUN or (key in ("prompt", "seed") and key not in record):
            continue
        out[key] = coerce(key, value, FIELD_TYPES[key], f"'{name}'", Path("/"))
    return out


def load_settings(path: str | os.PathLike) -> Recorded:
    """Read a settings record from a sidecar JSON, or from the metadata of a video v2v wrote."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InvalidOptions(f"settings file '{p}' does not exist: give the NAME.restyled.json written beside "
                             "an output")
    if p.suffix.lower() == ".json":
        try:
            record = json.loads(p.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise InvalidOptions(f"settings file '{p.name}' is not valid JSON ({' '.join(str(e).split())})") \
                from None
    else:
        record = read_embedded(p)
        if record is None:
            raise InvalidOptions(f"'{p.name}' holds no v2v settings (not a .json settings file, and no "
                                 f"'{METADATA_KEY}' tag in its metadata)")
    options = parse_record(record, p.name)
    inp = record.get("input") if isinstance(record.get("input"), dict) else {}
    recorded_input = Path(inp["path"]) if isinstance(inp.get("path"), str) and inp.get("path") else None
    return Recorded(options=options, input=recorded_input, record=record, source=p)


def input_matches(record: dict, input_path: Path) -> bool | None:
    """Whether ``input_path`` has the content of the record's input (its fingerprint); None when the record has no
    fingerprint. OSError when the file cannot be read."""
    from .pose.cache import file_fingerprint

    inp = record.get("input")
    want = inp.get("fingerprint") if isinstance(inp, dict) else None
    return file_fingerprint(input_path) == want if want else None


def check_input(recorded: Recorded, input_path: Path) -> None:
    """Warn when the input to rerun is not the recorded one (a different file gives a different video)."""
    try:
        same = input_matches(recorded.record, input_path)
    except OSError:
        return  # the pipeline reports a missing or unreadable input itself
    if same is False:
        log.warning("%s is not the input recorded in %s (its content differs): the result will differ",
                    Path(input_path).name, recorded.source.name)
