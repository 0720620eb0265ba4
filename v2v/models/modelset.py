"""Which models a run uses: one value, worked out once from the options, that the loader, the preflight, the pose
stage, the keypoint cache and the settings record all take. No weights are read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from v2v.errors import V2VError
from v2v.models.defaults import (DEFAULT_BASE, DEFAULT_CONTROLNET, DEFAULT_DWPOSE, DEFAULT_MOTION, DEFAULT_OPENPOSE,
                                 DEFAULT_TAESD)
from v2v.option_values import parse_motion_lora

@dataclass(frozen=True)
class ModelSet:
    """Each model's spec (hub id, local folder or file) for one run."""

    base: str  # the SD 1.5 base (a short name from `v2v models` already resolved to its repo)
    motion: str  # the motion module: a repo (the file picked by lightning_steps) or a file
    controlnet: str
    pose_model: str  # DWPose's or OpenPose's weights
    base_config: str  # where a single-file base or ControlNet takes its configs from: the set's own repos
    controlnet_config: str
    decoder: str | None  # TAESD, with --fast-decode
    vae: str | None  # a VAE replacing the base's (--vae, or the one a base name needs)
    lightning_steps: int = 4
    motion_loras: tuple[tuple[str, float], ...] = ()  # (spec, strength)

    @classmethod
    def for_options(cls, o) -> ModelSet:
        """The models of the RestyleOptions ``o``: its model set's (default or tiny), with each model it names."""
        from v2v.models.catalog import resolve_base

        tiny = None
        if o.models == "tiny":
            from v2v.tiny import tiny_model_paths

            tiny = {k: str(v) for k, v in tiny_model_paths().items()}
        pose_key = "openpose" if o.pose == "openpose" else "dwpose"
        defaults = tiny or {"base": DEFAULT_BASE, "motion": DEFAULT_MOTION, "controlnet": DEFAULT_CONTROLNET,
                            "openpose": DEFAULT_OPENPOSE, "dwpose": DEFAULT_DWPOSE, "taesd": DEFAULT_TAESD}
        base, alias_vae = resolve_base(o.base or defaults["base"])  # short names (--base toonyou)
        return cls(base=base, motion=o.motion or defaults["motion"], controlnet=o.controlnet or defaults["controlnet"],
                   pose_model=o.pose_model or defaults[pose_key],
                   base_config=defaults["base"], controlnet_config=defaults["controlnet"],
                   decoder=defaults["taesd"] if o.fast_decode else None, vae=o.vae or alias_vae,
                   lightning_steps=o.lightning_steps,
                   motion_loras=tuple(parse_motion_lora(v) for v in o.motion_loras))

    def specs(self) -> dict[str, str | None]:
        """Role -> spec, as the settings record lists them."""
        return {"base": self.base, "motion": self.motion, "controlnet": self.controlnet,
                "pose_model": self.pose_model, "base_config": self.base_config,
                "controlnet_config": self.controlnet_config, "decoder": self.decoder, "vae": self.vae}

    def diffusion_args(self) -> dict:
        """``load_diffusion_models`` / ``check_models`` arguments (also the loaded models' cache key)."""
        return dict(base=self.base, motion=self.motion, controlnet=self.controlnet,
                    lightning_steps=self.lightning_steps, vae=self.vae, decoder=self.decoder,
                    motion_loras=self.motion_loras, base_config=self.base_config,
                    controlnet_config=self.controlnet_config)

    def pose_files(self, pose: str, runtime: str, parts=None) -> list[Path]:
        """The pose model files a run with detector ``pose`` reads (``runtime``: DWPose's, concrete; ``parts``:
        OpenPose's networks, default all)."""
        if pose == "openpose":
            from v2v.pose.openpose import PARTS, OpenPose

            return OpenPose.model_files(self.pose_model, PARTS if parts is None else parts)
        from v2v.pose.dwpose import DWPose

        return DWPose.model_files(self.pose_model, runtime)

    def resolved_files(self, o) -> dict[str, list[Path]]:
        """The files actually taken for the motion module and the pose models (which file of a repo or folder),
        where they can be found; for the settings record. ``o``: the run's options, DWPose's runtime concrete."""
        from v2v.models.motion import resolve_motion

        out: dict[str, list[Path]] = {}
        try:
            out["motion"] = [resolve_motion(self.motion, self.lightning_steps)]
        except V2VError:
            pass
        if o.pose_json is None:
            try:
                out["pose_model"] = self.pose_files(o.pose, o.pose_runtime, o.pose_parts)
            except V2VError:
                pass
        return out
