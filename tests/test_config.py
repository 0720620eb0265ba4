"""The TOML config and presets: where it is read from, its errors, and the precedence of every layer
(built-in < config < preset < settings record / watch options < sidecar < command line), case by case."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import pytest

from v2v import cli
from v2v.config import BUILTIN_PRESETS, Config, load_config, resolve
from v2v.errors import InvalidOptions

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "dance.mp4"

CONFIG = """
steps = 3
seed = 11
guidance = 1.2
fps = "30000/1001"
pose_parts = ["body", "hands"]

[presets.anime]
steps = 5
seed = 12
base = "toonyou"
prompt = "anime style"

[presets.fast]
steps = 1
"""


@pytest.fixture(autouse=True)
def no_user_config(tmp_path, monkeypatch):
    """Every test starts with no user config and no $V2V_CONFIG (the user's own file must not leak in)."""
    monkeypatch.delenv("V2V_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def write(tmp_path: Path, text: str, name: str = "v2v.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_config_values_are_typed(tmp_path):
    cfg = load_config(write(tmp_path, CONFIG))
    assert cfg.defaults == {"steps": 3, "seed": 11, "guidance": 1.2, "fps": Fraction(30000, 1001),
                            "pose_parts": ("body", "hands")}
    assert cfg.preset("anime") == {"steps": 5, "seed": 12, "base": "toonyou", "prompt": "anime style"}
    assert cfg.preset("fast") == {"steps": 1}  # a user preset replaces the built-in one of that name
    assert cfg.preset("quality") == BUILTIN_PRESETS["quality"] == {"steps": 8}


def test_where_the_config_comes_from(tmp_path, monkeypatch):
    assert load_config().path is None and load_config().preset("fast") == {"steps": 2}  # none: built-ins only
    user = tmp_path / "xdg" / "v2v" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text("seed = 21\n")
    assert load_config().defaults == {"seed": 21}  # the user's config.toml (platformdirs)
    monkeypatch.setenv("V2V_CONFIG", str(write(tmp_path, "seed = 22\n", "env.toml")))
    assert load_config().defaults == {"seed": 22}  # $V2V_CONFIG over the user file
    assert load_config(write(tmp_path, "seed = 23\n", "cli.toml")).defaults == {"seed": 23}  # --config over both
    monkeypatch.setenv("V2V_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(InvalidOptions, match="nope.toml.*does not exist"):
        load_config()


@pytest.mark.parametrize("text, words", [
    ("steps = \n", ["not valid TOML"]),
    ("stpes = 3\n", ["unknown option \"stpes\"", "the top level", "did you mean \"steps\""]),
    ("[presets.x]\ncolour = 1\n", ["unknown option \"colour\"", "[presets.x]"]),
    ("steps = \"four\"\n", ["steps", "whole number"]),
    ("keep_pose = \"p.mp4\"\n", ["keep_pose", "command line"]),
    ("preset = \"nope\"\n", ["unknown preset 'nope'", "fast", "quality"]),
    ("presets = 3\n", ["[presets.NAME]"]),
])
def test_config_errors_name_the_file_and_key(tmp_path, text, words):
    p = write(tmp_path, text)
    with pytest.raises(InvalidOptions) as e:
        load_config(p)
    assert str(p) in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_unknown_preset_lists_the_known_ones(tmp_path):
    cfg = load_config(write(tmp_path, CONFIG))
    with pytest.raises(InvalidOptions) as e:
        cfg.preset("animee")
    assert "unknown preset 'animee'" in str(e.value) and "anime, fast, quality" in str(e.value)


def test_resolve_layers():
    cfg = Config(defaults={"steps": 3, "seed": 1}, presets={"p": {"steps": 5}})
    assert resolve({}, config=cfg) == {"steps": 3, "seed": 1}
    assert resolve({}, config=cfg, preset="p") == {"steps": 5, "seed": 1}
    assert resolve({}, config=cfg, preset="p", settings={"steps": 6, "seed": 2}) == {"steps": 6, "seed": 2}
    assert resolve({"steps": 7}, config=cfg, preset="p", settings={"steps": 6}) == {"steps": 7, "seed": 1}


# ---------------------------------------------------------------- precedence through the command line


def request(*argv: str) -> dict:
    """The options `v2v restyle ARGV` would run with (parsed and layered, nothing run)."""
    a = cli.build_parser().parse_args(["restyle", *map(str, argv)])
    _, opts, _ = cli.restyle_request(a)
    return opts


def test_no_config_means_only_what_was_typed():
    # unset options are left out, so RestyleOptions' built-in defaults apply exactly as before configs existed
    assert request(SAMPLE, "-p", "x") == {"prompt": "x"}
    assert request(SAMPLE, "-p", "x", "--steps", "4", "--no-cache", "--every-nth", "1") == {
        "prompt": "x", "steps": 4, "pose_cache": False, "every_nth": 1}


def test_precedence_case_by_case(tmp_path):
    conf = write(tmp_path, CONFIG)
    rec = tmp_path / "run.restyled.json"
    rec.write_text(json.dumps({"schema": "v2v.settings", "version": 1, "prompt": "recorded", "seed": 13,
                               "options": {"steps": 6, "guidance": 1.4}}))
    # config only: its top level over the built-ins
    o = request(SAMPLE, "-p", "x", "--config", conf)
    assert (o["steps"], o["seed"], o["guidance"], o["prompt"]) == (3, 11, 1.2, "x")
    # a preset over the config (keys it does not set stay the config's)
    o = request(SAMPLE, "--config", conf, "--preset", "anime")
    assert (o["steps"], o["seed"], o["guidance"], o["prompt"], o["base"]) == (5, 12, 1.2, "anime style", "toonyou")
    # a settings record over the preset
    o = request(SAMPLE, "--config", conf, "--preset", "anime", "--settings", rec)
    assert (o["steps"], o["seed"], o["guidance"], o["prompt"], o["base"]) == (6, 13, 1.4, "recorded", "toonyou")
    # the command line over everything
    o = request(SAMPLE, "--config", conf, "--preset", "anime", "--settings", rec, "--steps", "7", "-p", "typed")
    assert (o["steps"], o["seed"], o["prompt"]) == (7, 13, "typed")
    # a built-in preset without a config file
    assert request(SAMPLE, "-p", "x", "--preset", "quality")["steps"] == 8


def test_config_default_preset_and_override(tmp_path):
    conf = write(tmp_path, 'preset = "anime"\n' + CONFIG)  # top-level keys come before the tables
    assert request(SAMPLE, "--config", conf)["steps"] == 5  # the config's own default preset
    assert request(SAMPLE, "--config", conf, "--preset", "quality")["steps"] == 8  # --preset replaces it


def test_cli_config_errors_are_one_line(tmp_path):
    import subprocess
    import sys

    bad = write(tmp_path, "stpes = 2\n")
    p = subprocess.run([sys.executable, "-m", "v2v", "restyle", str(SAMPLE), "-p", "x", "--config", str(bad)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and "stpes" in p.stderr and str(bad) in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    p = subprocess.run([sys.executable, "-m", "v2v", "restyle", str(SAMPLE), "-p", "x", "--preset", "nope"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and "unknown preset 'nope'" in p.stderr and "fast, quality" in p.stderr


# ---------------------------------------------------------------- watch: sidecars over the watch options


def test_watch_precedence_with_sidecar_and_its_preset(tmp_path):
    """config < preset (--preset) < the watch command's options < the sidecar's preset < the sidecar's keys."""
    from v2v.pipeline import Restyler
    from v2v.watch import Watcher

    cfg = load_config(write(tmp_path, CONFIG + "\n[presets.q]\nsteps = 8\nguidance = 1.6\n"))
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    for name in ("plain", "with_preset", "with_keys"):
        shutil.copy(SAMPLE, in_dir / f"{name}.mp4")
    (in_dir / "with_preset.json").write_text(json.dumps({"preset": "q"}))
    (in_dir / "with_keys.json").write_text(json.dumps({"preset": "q", "steps": 2, "seed": 99}))
    r = Restyler(**cfg.layers("anime"))  # what `v2v watch --config ... --preset anime` builds
    w = Watcher(in_dir, tmp_path / "out", restyler=r, config=cfg, seed=50, prompt="typed")  # typed: --seed, -p

    def effective(name: str) -> dict:
        options, _, own = w.settings_for(in_dir / f"{name}.mp4")
        return {**r.defaults, **options}  # how the Restyler merges its defaults under each call's options

    o = effective("plain")
    assert (o["steps"], o["seed"], o["guidance"], o["prompt"]) == (5, 50, 1.2, "typed")
    o = effective("with_preset")
    assert (o["steps"], o["seed"], o["guidance"]) == (8, 50, 1.6)
    o = effective("with_keys")
    assert (o["steps"], o["seed"], o["guidance"]) == (2, 99, 1.6)
    (in_dir / "plain.json").write_text(json.dumps({"preset": "nope"}))
    with pytest.raises(InvalidOptions) as e:
        w.settings_for(in_dir / "plain.mp4")
    assert "plain.json" in str(e.value) and "unknown preset 'nope'" in str(e.value)


def test_restyle_help_is_grouped_and_short(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["restyle", "--help"])
    out = capsys.readouterr().out
    for group in ("generation:", "frames:", "models:", "pose:", "output:", "config and reporting:"):
        assert f"\n{group}\n" in out
    assert "--settings FILE" in out and "--preset NAME" in out and "--progress {bars,json}" in out
    assert max(len(line) for line in out.splitlines()) <= 100
