"""The config file: option defaults and named presets, in TOML.

Where: ``--config FILE``, else ``$V2V_CONFIG``, else ``config.toml`` in the user config folder (platformdirs
``user_config_dir("v2v")``: ``~/.config/v2v/config.toml`` on Linux). A missing user file is fine (no config);
a ``--config``/``$V2V_CONFIG`` file that does not exist is an error. ::

    # option defaults: any RestyleOptions field (the names of the command-line options, with _ for -)
    steps = 4
    pose_smoothing = 0.6
    preset = "anime"            # a preset applied by default (a --preset on the command line replaces it)

    [presets.anime]
    base = "toonyou"
    prompt = "anime style, vibrant colours"
    guidance = 1.5

Precedence, lowest first: built-in defaults < the config's top-level defaults < the preset (``--preset NAME``,
else the config's ``preset``) < a settings record (``restyle --settings FILE``) < the options typed on the command
line. In watch mode a video's sidecar (``clip.json``/``clip.txt``) sits above the watch command's own options,
and a ``"preset"`` in the sidecar applies to that video above the watch command's options and under the
sidecar's other keys.

Built-in presets (a user preset of the same name replaces one): see :data:`BUILTIN_PRESETS`.
A key that is not an option, a value of the wrong type, an unknown preset, or a file that is not valid TOML is an
``InvalidOptions`` error naming the file and the key; output paths (``keep_pose``) and per-clip inputs
(``pose_json``) are not allowed in a config.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidOptions
from .options import FIELD_TYPES, coerce

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

BUILTIN_PRESETS: dict[str, dict] = {
    "fast": {"steps": 2},  # the 2-step Lightning model: about twice as fast as the default 4 steps
    "quality": {"steps": 8},  # the 8-step Lightning model: the model card's best quality, twice the time
}
NOT_IN_CONFIG = frozenset({"keep_pose", "pose_json", "extra"})  # per-run paths, not defaults
ENV = "V2V_CONFIG"


def user_config_path() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("v2v")) / "config.toml"


@dataclass
class Config:
    path: Path | None = None  # the file read (None: no config)
    defaults: dict = field(default_factory=dict)  # top-level option defaults
    presets: dict[str, dict] = field(default_factory=lambda: {k: dict(v) for k, v in BUILTIN_PRESETS.items()})
    preset_name: str | None = None  # the config's default preset (top-level "preset")

    def preset(self, name: str) -> dict:
        """The options of preset ``name``; InvalidOptions listing the known presets when there is none."""
        if name not in self.presets:
            where = f" (in {self.path} or built in)" if self.path else " (built in)"
            raise InvalidOptions(f"unknown preset '{name}': the presets are {', '.join(sorted(self.presets))}"
                                 f"{where}")
        return dict(self.presets[name])

    def layers(self, preset: str | None = None) -> dict:
        """Config defaults with the preset over them (``preset`` else the config's own default preset)."""
        name = preset if preset is not None else self.preset_name
        return {**self.defaults, **(self.preset(name) if name else {})}


def _check_table(table: dict, where: str, path: Path) -> dict:
    """Typed options from one TOML table; InvalidOptions naming the key and the file."""
    types = FIELD_TYPES
    out = {}
    for key, value in table.items():
        if key not in types or key in NOT_IN_CONFIG:
            if key in NOT_IN_CONFIG:
                raise InvalidOptions(f"{path}: \"{key}\" in {where} cannot be set in a config (it names a file of "
                                     "one run): give it on the command line")
            close = difflib.get_close_matches(key, sorted(set(types) - NOT_IN_CONFIG), n=1)
            hint = f" (did you mean \"{close[0]}\"?)" if close else ""
            raise InvalidOptions(f"{path}: unknown option \"{key}\" in {where}{hint}")
        try:
            out[key] = coerce(key, value, types[key], f"{path}: {where}", path.parent)
        except InvalidOptions:
            raise
        except (TypeError, ValueError) as e:
            raise InvalidOptions(f"{path}: \"{key}\" in {where} has a bad value ({e})") from None
    return out


def parse_config(data: dict, path: Path) -> Config:
    """A Config from parsed TOML ``data`` (read from ``path``, used in messages)."""
    cfg = Config(path=path)
    data = dict(data)
    presets = data.pop("presets", {})
    if not isinstance(presets, dict) or not all(isinstance(v, dict) for v in presets.values()):
        raise InvalidOptions(f"{path}: presets are tables: write [presets.NAME] followed by options")
    name = data.pop("preset", None)
    if name is not None and not isinstance(name, str):
        raise InvalidOptions(f"{path}: \"preset\" must be a preset name (a string)")
    cfg.defaults = _check_table(data, "the top level", path)
    for pname, table in presets.items():
        if "preset" in table:
            raise InvalidOptions(f"{path}: [presets.{pname}] cannot name another preset")
        cfg.presets[pname] = _check_table(table, f"[presets.{pname}]", path)
    if name is not None:
        cfg.preset(name)  # an unknown default preset is an error now, not at the first run
        cfg.preset_name = name
    return cfg


def config_path(explicit: str | os.PathLike | None = None) -> tuple[Path | None, bool]:
    """(the config file to read or None, whether it was asked for explicitly)."""
    if explicit is not None:
        return Path(explicit).expanduser(), True
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser(), True
    p = user_config_path()
    return (p, False) if p.is_file() else (None, False)


def load_config(explicit: str | os.PathLike | None = None) -> Config:
    """Read the config (``explicit`` file, else $V2V_CONFIG, else the user file when it exists)."""
    path, asked = config_path(explicit)
    if path is None:
        return Config()
    if not path.is_file():
        how = "--config" if explicit is not None else f"${ENV}"
        raise InvalidOptions(f"config file '{path}' ({how}) does not exist: check the path")
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise InvalidOptions(f"config file '{path}' is not valid TOML: {e}") from None
    except OSError as e:
        raise InvalidOptions(f"config file '{path}' cannot be read ({e.strerror or e})") from None
    return parse_config(data, path)


def resolve(cli: dict, *, config: Config | None = None, preset: str | None = None,
            settings: dict | None = None) -> dict:
    """The options of one run: config defaults < preset < ``settings`` (a rerun's record) < ``cli`` (the options
    typed on the command line). Built-in defaults are what is left out (RestyleOptions' own)."""
    config = config or Config()
    return {**config.layers(preset), **(settings or {}), **cli}
