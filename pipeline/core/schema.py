"""The config contract: the type and range of every value a stage reads, checked in one place.

``load_config`` checks a resolved config against ``RULES`` before any stage runs, so a wrong
value (``train.epochs=abc``, ``1.5``, ``data.trim=maybe``, ``data.fps=nan``, an empty path) is
one line naming the key, what it got and what it takes, whichever stage reads it. Types are
strict: a bool is not a number, a string is not a bool. Keys absent from a config are not
checked (a stage's own tests may run on part of one).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.core.errors import shown


@dataclass(frozen=True)
class Rule:
    """What a config value must be: ``accepts(value)``, described to the user as ``expect``."""

    accepts: Callable[[Any], bool]
    expect: str


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def integer(low: int | None = None, high: int | None = None) -> Rule:
    """A whole number in ``low..high`` (either bound may be open)."""
    bounds = " ".join(filter(None, [f">= {low}" if low is not None else "", f"<= {high}" if high is not None else ""]))
    return Rule(
        lambda v: _is_int(v) and (low is None or v >= low) and (high is None or v <= high),
        f"a whole number {bounds}".strip(),
    )


def number(
    above: float | None = None, at_least: float | None = None, below: float | None = None, at_most: float | None = None
) -> Rule:
    """A finite number within the given bounds."""
    bounds = [
        (above, ">", lambda v, b: v > b),
        (at_least, ">=", lambda v, b: v >= b),
        (below, "<", lambda v, b: v < b),
        (at_most, "<=", lambda v, b: v <= b),
    ]
    given = [(b, sign, test) for b, sign, test in bounds if b is not None]
    text = " and ".join(f"{sign} {b:g}" for b, sign, _ in given)
    return Rule(lambda v: _is_number(v) and all(test(v, b) for b, _, test in given), f"a number {text}".strip())


BOOLEAN = Rule(lambda v: isinstance(v, bool), "true or false")
TEXT = Rule(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")
OPTIONAL_TEXT = Rule(lambda v: v is None or TEXT.accepts(v), "null or a non-empty string")
DASK_ADDRESS = Rule(
    lambda v: isinstance(v, str) and re.fullmatch(r"(tcp|tls)://[^\s/]+:\d{1,5}", v) is not None,
    "a Dask scheduler address, tcp://<host>:<port>",
)


def choice(*options: Any) -> Rule:
    return Rule(
        lambda v: v in options and type(v) in {type(o) for o in options}, "one of " + ", ".join(map(str, options))
    )


def numbers(count: int, element: Rule) -> Rule:
    """A list of ``count`` values, each accepted by ``element``."""
    return Rule(
        lambda v: isinstance(v, (list, tuple)) and len(v) == count and all(map(element.accepts, v)),
        f"a list of {count} values, each {element.expect.removeprefix('a ')}",
    )


def texts() -> Rule:
    """A list of non-empty strings (possibly empty)."""
    return Rule(lambda v: isinstance(v, (list, tuple)) and all(map(TEXT.accepts, v)), "a list of non-empty strings")


def optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.accepts(v), f"null or {rule.expect}")


FRACTION = number(at_least=0, at_most=1)
RULES: dict[str, Rule] = {
    "video.ffmpeg": TEXT,
    "video.toolchain_file": TEXT,
    "data.root": TEXT,
    "data.classes": OPTIONAL_TEXT,
    "data.shards_dir": TEXT,
    "data.fps": number(above=0),
    "data.short_side": integer(2),
    "data.jpeg_quality": integer(1, 100),
    "data.workers": integer(1),
    "data.executor": choice("local", "dask"),
    "data.scheduler": optional(DASK_ADDRESS),
    "data.trim": BOOLEAN,
    "data.samples_per_shard": integer(1),
    "data.train_split": TEXT,
    "data.val_split": TEXT,
    "data.hflip": BOOLEAN,
    "data.mean": numbers(3, number(at_least=0, at_most=1)),
    "data.std": numbers(3, number(above=0)),
    "model.net.name": TEXT,
    "model.clip.num_frames": integer(1),
    "model.clip.stride": integer(1),
    "model.clip.crop_size": integer(1),
    "model.init.weights": OPTIONAL_TEXT,
    "model.init.inflate": optional(choice("centre", "mean")),
    "model.init.exclude": texts(),
    "train.out_dir": TEXT,
    "train.epochs": integer(1),
    "train.batch_size": integer(1),
    "train.num_workers": integer(0),
    "train.decode_on": choice("workers", "device"),
    "train.lr": number(above=0),
    "train.momentum": number(at_least=0, below=1),
    "train.weight_decay": number(at_least=0),
    "train.warmup_epochs": number(at_least=0),
    "train.label_smoothing": number(at_least=0, below=1),
    "train.lr_backbone_scale": number(at_least=0),
    "train.grad_clip": number(at_least=0),
    "train.seed": integer(0),
    "train.resume": BOOLEAN,
    "train.device": choice("auto", "cpu", "cuda"),
    "train.amp": choice("bf16", "fp32"),
    "train.compile": BOOLEAN,
    "train.channels_last": BOOLEAN,
    "train.scale_jitter": numbers(2, number(above=0)),
    "train.max_crop_shift": optional(number(at_least=0)),
    "train.val_every": integer(0),
    "train.system_metrics_s": number(at_least=0),
    "train.metrics_csv": TEXT,
    "generate.seed": integer(0),
    "generate.train_per_class": integer(1),
    "generate.validate_per_class": integer(1),
    "generate.num_missing": integer(0),
    "generate.num_corrupt": integer(0),
    "validate.report_dir": TEXT,
    "validate.max_missing_fraction": FRACTION,
    "validate.max_failed_fraction": FRACTION,
    "validate.min_clips_per_class": integer(0),
    "validate.pixel_clips_per_shard": integer(0),
    "validate.seed": integer(0),
    "eval.num_clips": integer(1),
    "eval.num_crops": choice(1, 3),
    "eval.crop_size": optional(integer(1)),
    "eval.batch_size": integer(1),
    "eval.metrics_file": TEXT,
    "eval.per_class_file": TEXT,
    "eval.plots_dir": TEXT,
    "eval.allow_unfinished": BOOLEAN,
    "eval.attention_classes": integer(0),
    "register.model_name": TEXT,
    "register.allow_unfinished": BOOLEAN,
    "register.serving.max_rows": integer(1),
    "register.serving.max_video_mb": number(above=0),
    "register.serving.max_seconds": number(above=0),
    "register.serving.max_frame_pixels": integer(1),
    "register.serving.max_source_frames": integer(1),
    "register.serving.decode_cpu_seconds": integer(1),
    "register.serving.request_seconds": number(above=0),
    "register.serving.concurrent_decodes": integer(1),
    "register.serving.max_request_mb": number(above=0),
    "promote.metric": TEXT,
    "promote.margin": number(at_least=0),
    "mlflow.experiment": TEXT,
}


_ABSENT = object()


def config_problem(cfg: DictConfig) -> str | None:
    """The first value of ``cfg`` that breaks ``RULES``, as one line, or None when all hold."""
    for key, rule in RULES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT:
            continue
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value)
        if not rule.accepts(value):
            return f"{key}={shown(value)} is not valid: set it to {rule.expect}"
    return None
