"""Load a stage's configuration: ``params.yaml`` plus ``key=value`` overrides.

``params.yaml`` (committed, composed from ``pipeline/conf`` by ``make params`` or
``dvc exp run``) is what every stage reads, so ``dvc repro`` and a hand-run stage agree.
Overrides use Hydra's grammar (``train.epochs=3``, ``+model.net.dropout=0.1``, ``~key``) and
are applied onto it; one that picks a config group (``model=tiny_plain``, ``experiment=...``)
recomposes from ``pipeline/conf`` instead.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from pipeline.core.errors import ConfigError, StageError, shown
from pipeline.core.files import write_atomic

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
PARAMS_FILE = Path("params.yaml")
_ABSENT = object()


def config_groups() -> set[str]:
    """Names of the Hydra config groups (``data``, ``model``, ...)."""
    return {p.name for p in CONF_DIR.iterdir() if p.is_dir()}


def group_choices(group: str) -> list[str]:
    """The options of config group ``group``: its ``pipeline/conf/<group>/*.yaml`` names."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_group_choices(overrides: Sequence[Override]) -> None:
    """ConfigError naming the valid options when an override picks a config group option that does
    not exist (``experiment=kinetics400_r50_a3``); Hydra itself would skip an unknown optional one."""
    groups = config_groups()
    for override in overrides:
        group, value = override.key_or_group, override.value()
        choices = group_choices(group) if group in groups else []
        if choices and override.is_delete():
            raise ConfigError(f"{shown(override.input_line)}: every stage needs a {group} config; choose another one")
        if choices and value not in choices:
            raise ConfigError(
                f"{shown(override.input_line)}: no {group} config {shown(value)}; choose one of {', '.join(choices)} "
                f"(pipeline/conf/{group}/)"
            )


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``pipeline/conf/config.yaml`` with Hydra overrides (unresolved)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    check_group_choices(parse_overrides(overrides))
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))
    except HydraException as err:
        first_line = str(err).strip().splitlines()[0]
        raise ConfigError(f"bad config override: {first_line}") from None


def parse_overrides(overrides: Sequence[str]) -> list[Override]:
    """Hydra's own parsing of ``key=value``, ``+key=value``, ``++key=value`` and ``~key[=value]``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            override = parser.parse_overrides([text])[0]
        except (HydraException, ValueError, RecursionError):  # ValueError: a 130,000-digit number
            raise ConfigError(
                f"override {shown(text)} is not key=value, +key=value or ~key (e.g. train.epochs=3), "
                "or its value is too large or too deeply nested"
            ) from None
        if override.is_sweep_override():
            raise ConfigError(
                f"override {shown(text)} is a sweep; a stage runs one config "
                "(use `dvc exp run` or the ablation for several)"
            )
        parsed.append(override)
    return parsed


def close_key(cfg: DictConfig, key: str) -> str | None:
    """The existing key of ``cfg`` closest in spelling to the unknown ``key`` (``train.epoch`` →
    ``train.epochs``), among the keys beside where it would go; None when none is close."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    if not isinstance(parent, DictConfig):
        return None
    found = difflib.get_close_matches(leaf, [str(k) for k in parent], n=1, cutoff=0.6)
    if not found:
        return None
    return f"{parent_key}.{found[0]}" if parent_key else found[0]


def apply_override(cfg: DictConfig, override: Override) -> None:
    """Apply one parsed override to ``cfg`` in place, with Hydra's rules for ``+``, ``++`` and ``~``."""
    key, text = override.key_or_group, override.input_line
    present = OmegaConf.select(cfg, key, default=_ABSENT) is not _ABSENT
    if override.is_delete():
        if not present:
            raise ConfigError(f"override {shown(text)}: no config key {shown(key)} to delete")
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if override.value() is not None and parent[leaf] != override.value():
            raise ConfigError(f"override {shown(text)}: {key} is {shown(parent[leaf])}, not {shown(override.value())}")
        del parent[leaf]
        return
    if override.is_add() and present:
        raise ConfigError(f"override {shown(text)}: {key} exists already; drop the + to change it (or use ++)")
    if not (present or override.is_add() or override.is_force_add()):
        close = close_key(cfg, key)
        hint = f"did you mean {close}? (" if close else "("
        raise ConfigError(f"unknown config key {shown(key)}; {hint}prefix it with + to add a new key)")
    OmegaConf.update(cfg, key, override.value(), merge=True, force_add=True)


# A run's reports, under its train.out_dir when a command line moves that and not them, so that a hand
# run (``python -m pipeline.train train.out_dir=/tmp/x``) never rewrites the pipeline's reports/.
RUN_REPORTS = {
    "train.metrics_csv": "train_metrics.csv",
    "eval.metrics_file": "eval/metrics.json",
    "eval.per_class_file": "eval/per_class.json",
    "eval.plots_dir": "eval/plots",
}


def follow_out_dir(cfg: DictConfig, overridden: set[str]) -> None:
    """Put the ``RUN_REPORTS`` not in ``overridden`` under ``train.out_dir`` when it is overridden."""
    if "train.out_dir" not in overridden:
        return
    for key, name in RUN_REPORTS.items():
        if key not in overridden and OmegaConf.select(cfg, key, default=None) is not None:
            OmegaConf.update(cfg, key, f"{cfg.train.out_dir}/{name}")


def load_config(overrides: Sequence[str] = (), params_file: Path | None = None) -> DictConfig:
    """Return the resolved config of a stage run.

    Reads ``params_file`` (default ``./params.yaml``; composed defaults when absent) and
    applies ``overrides`` with Hydra's override grammar; one that picks a config group
    (``model=...``) recomposes from ``pipeline/conf``. An overridden ``train.out_dir`` takes the
    run's reports with it (``RUN_REPORTS``) unless they are overridden too. Raises ``ConfigError`` with a one-line
    reason on a bad override or config.
    """
    params_file = PARAMS_FILE if params_file is None else params_file
    parsed = parse_overrides(overrides)
    if any(o.key_or_group in config_groups() for o in parsed) or not params_file.exists():
        cfg = compose(overrides)
    else:
        cfg = OmegaConf.load(params_file)
        for override in parsed:
            apply_override(cfg, override)
    follow_out_dir(cfg, {o.key_or_group for o in parsed})
    try:
        OmegaConf.resolve(cfg)
    except Exception as err:  # omegaconf raises several interpolation error types
        raise ConfigError(f"cannot resolve config: {err}".splitlines()[0]) from None
    from pipeline.core.schema import config_problem

    problem = config_problem(cfg)
    if problem:
        raise ConfigError(problem)
    return cfg


def classes_file(data_cfg: DictConfig) -> Path:
    """The class list of a dataset: ``data.classes``, or ``<data.root>/classes.txt`` when null."""
    return Path(data_cfg.classes) if data_cfg.get("classes") else Path(data_cfg.root) / "classes.txt"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists kept as values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


WHERE_NOT_WHAT = {  # settings that say where things go, not what a run learns
    "train.out_dir",
    "train.metrics_csv",
    "train.resume",
    "train.num_workers",
    "train.device",
    "data.root",
    "data.shards_dir",
    "data.classes",
    "data.workers",
    "data.executor",
    "data.scheduler",
}


def changed_settings(cfg: DictConfig) -> dict[str, Any]:
    """The model, data and train values of ``cfg`` that differ from pipeline/conf's defaults.

    Where things go (output paths, the dataset root, workers, resume) is left out: it does not
    change what a run learns.
    """
    defaults = compose()
    OmegaConf.resolve(defaults)
    ours = flatten(OmegaConf.to_container(cfg, resolve=True))
    theirs = flatten(OmegaConf.to_container(defaults))
    return {
        key: value
        for key, value in ours.items()
        if key.split(".")[0] in ("model", "data", "train")
        and key not in WHERE_NOT_WHAT
        and key != "model.net.name"
        and theirs.get(key, _ABSENT) != value
    }


def config_md5(config: Mapping[str, Any]) -> str:
    """md5 of a resolved config's canonical JSON (sorted keys): a run's own config, by content."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.md5(canonical.encode()).hexdigest()


def write_params(path: Path = PARAMS_FILE, overrides: Sequence[str] = ()) -> None:
    """Write the composed, resolved config to ``params.yaml`` atomically, exactly as DVC does."""
    cfg = compose(overrides)
    OmegaConf.resolve(cfg)
    write_atomic(path, OmegaConf.to_yaml(cfg))


def stage_main(core, argv: Sequence[str] | None = None) -> int:
    """Shared ``main`` of a stage: load the config, run ``core(cfg)``, turn errors into one line."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = load_config(argv)
        result = core(cfg)
    except (StageError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ConfigAttributeError, ConfigKeyError) as err:  # a section the stage needs was deleted (~video)
        print(f"error: the config has no {err.full_key!r}, which this stage needs; do not delete it", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only or full output directory, a path that is not a folder...
        where = f"{err.filename}: " if err.filename else ""
        print(
            f"error: {where}{err.strerror or err}; check that the path exists, is writable and its disk has room",
            file=sys.stderr,
        )
        return 2
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(stage_main(lambda _cfg: write_params(PARAMS_FILE, sys.argv[1:])))
