"""Every config key a stage reads has a test that runs it with another value than the default.

``KEY_TESTS`` maps each key of ``pipeline.core.schema.RULES`` to the test that sets it to a
non-default value and checks what that changes (the stage's output, its error, what its core
function builds); ``EXEMPT`` names the keys for which such a test is impossible or pointless, with
the reason. A key added to ``RULES`` without either fails here, and so does a table entry whose
test does not exist or does not set its key.

What counts as setting a key, in the mapped test function's own source (its decorators included,
its docstring and comments not): a ``key=value`` override in a string literal or an f-string
(``"train.momentum=0.5"``, ``f"data.root={root}"``, Hydra's ``+key=`` too), or an assignment to an
attribute path ending in the key (``cfg.train.resume = True``). A literal value must differ from
the key's default in ``pipeline/conf`` (``params.yaml``); a computed one (an f-string field, a
variable) is taken as the test's own choice. A key set only inside a helper the test calls does
not count: the test passes the override to the helper itself.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from pipeline.core.config import compose, parse_overrides
from pipeline.core.errors import ConfigError
from pipeline.core.schema import RULES

REPO = Path(__file__).resolve().parents[1]
COMPUTED = object()  # a value known only when the test runs (an f-string field, a variable)
_FIELD = "\0"  # stands for an f-string's formatted field in its text

TRAIN, EVALUATE, INIT = "tests/test_train.py", "tests/test_evaluate.py", "tests/test_init_weights.py"
PREPROCESS, VALIDATE, REGISTRY = "tests/test_preprocess.py", "tests/test_validate.py", "tests/test_registry.py"
SCHEDULE = f"{TRAIN}::test_the_training_follows_its_schedule_settings"
SGD_STEPS = f"{TRAIN}::test_two_sgd_steps_are_the_closed_form_of_momentum_weight_decay_and_clipping"
CLIP_GEOMETRY = f"{TRAIN}::test_training_clips_are_the_configured_window_of_the_configured_frames"
BAD_TRAIN_CONFIGS = f"{TRAIN}::test_bad_configs_fail_with_one_clear_line"
UNFINISHED = f"{TRAIN}::test_an_unfinished_training_is_refused_by_evaluate_and_register_unless_overridden"
GPU_SETTINGS = "tests/test_train_gpu_settings.py::test_a_tiny_training_runs_with_the_gpu_settings_on_cpu"
DECODE_SETTINGS = f"{PREPROCESS}::test_the_stage_decodes_as_its_data_settings_say"
PREPROCESS_CLI = f"{PREPROCESS}::test_stage_main_exits_zero_with_bad_videos_and_two_on_bad_root"
VALIDATE_THRESHOLDS = f"{VALIDATE}::test_the_stage_checks_with_its_validate_settings"
PIXEL_SAMPLE = f"{VALIDATE}::test_validate_pixel_clips_per_shard_clips_of_each_shard_are_sampled_by_validate_seed"
EVAL_OUTPUTS = f"{EVALUATE}::test_evaluate_draws_eval_attention_classes_figures_and_writes_where_the_eval_paths_say"
EVAL_SPLIT = f"{EVALUATE}::test_evaluate_scores_every_video_of_data_val_split_in_its_views"
GENERATE = "tests/test_generate.py::test_the_stage_generates_what_its_generate_settings_say"
SERVING = f"{REGISTRY}::test_the_registered_model_serves_within_the_register_serving_bounds"
PROMOTE = f"{REGISTRY}::test_a2net_promote_gates_on_promote_metric_within_promote_margin"
DASK_RUN = "tests/test_scaleout_dask.py::test_a_dask_run_spreads_the_clips_over_the_workers_and_writes_the_local_bytes"

KEY_TESTS: dict[str, str] = {
    "video.ffmpeg": "tests/test_reproducibility.py::test_a_bad_video_ffmpeg_is_one_line_naming_the_setting",
    "video.toolchain_file": (
        "tests/test_reproducibility.py::test_the_toolchain_stage_writes_its_record_where_video_toolchain_file_says"
    ),
    "data.root": PREPROCESS_CLI,
    "data.classes": f"{PREPROCESS}::test_data_classes_names_the_class_list_that_numbers_the_labels",
    "data.shards_dir": PREPROCESS_CLI,
    "data.fps": DECODE_SETTINGS,
    "data.short_side": DECODE_SETTINGS,
    "data.jpeg_quality": PREPROCESS_CLI,
    "data.workers": f"{PREPROCESS}::test_data_workers_processes_decode_the_clips",
    "data.executor": DASK_RUN,
    "data.scheduler": DASK_RUN,
    "data.trim": f"{PREPROCESS}::test_data_trim_keeps_the_annotated_seconds_only",
    "data.samples_per_shard": DECODE_SETTINGS,
    "data.train_split": BAD_TRAIN_CONFIGS,
    "data.val_split": EVAL_SPLIT,
    "data.hflip": f"{TRAIN}::test_data_hflip_reaches_the_training_clips",
    "data.mean": f"{TRAIN}::test_clips_are_normalised_with_data_mean_and_std",
    "data.std": f"{TRAIN}::test_clips_are_normalised_with_data_mean_and_std",
    "model.net.name": BAD_TRAIN_CONFIGS,
    "model.clip.num_frames": CLIP_GEOMETRY,
    "model.clip.stride": CLIP_GEOMETRY,
    "model.clip.crop_size": CLIP_GEOMETRY,
    "train.out_dir": f"{EVALUATE}::test_missing_checkpoint_is_one_clear_line",
    "train.epochs": SCHEDULE,
    "train.batch_size": BAD_TRAIN_CONFIGS,
    "train.num_workers": f"{TRAIN}::test_the_loaders_read_with_train_num_workers_worker_processes",
    "model.init.weights": f"{INIT}::test_two_d_weights_inflated_centre_start_an_r50_training",
    "model.init.inflate": f"{INIT}::test_two_d_weights_inflated_centre_start_an_r50_training",
    "model.init.exclude": f"{INIT}::test_a_checkpoint_of_another_class_list_starts_a_training_with_its_head_excluded",
    "train.lr_backbone_scale": f"{INIT}::test_two_d_weights_inflated_centre_start_an_r50_training",
    "eval.crop_size": f"{EVALUATE}::test_evaluate_tests_on_crops_of_eval_crop_size",
    "train.decode_on": "tests/test_device_decode.py::test_a_training_decoding_on_the_device_ends_with_the_weights_of_the_cpu_path",  # noqa: E501
    "train.lr": SCHEDULE,
    "train.momentum": SGD_STEPS,
    "train.weight_decay": SGD_STEPS,
    "train.warmup_epochs": SCHEDULE,
    "train.label_smoothing": f"{TRAIN}::test_the_training_loss_is_the_label_smoothed_cross_entropy",
    "train.grad_clip": SGD_STEPS,
    "train.seed": f"{TRAIN}::test_train_seed_picks_the_order_and_the_augmentation_of_the_clips",
    "train.resume": f"{TRAIN}::test_resume_after_an_interruption_ends_with_the_weights_of_a_straight_run",
    "train.device": BAD_TRAIN_CONFIGS,
    "train.amp": GPU_SETTINGS,
    "train.compile": GPU_SETTINGS,
    "train.channels_last": "tests/test_train_gpu_settings.py::test_clips_take_the_channels_last_layout_on_any_device",
    "train.scale_jitter": CLIP_GEOMETRY,
    "train.max_crop_shift": CLIP_GEOMETRY,
    "train.system_metrics_s": "tests/test_train.py::test_a_training_run_carries_the_machines_system_metrics",
    "train.val_every": SCHEDULE,
    "train.metrics_csv": SCHEDULE,
    "generate.seed": GENERATE,
    "generate.train_per_class": GENERATE,
    "generate.validate_per_class": GENERATE,
    "generate.num_missing": GENERATE,
    "generate.num_corrupt": GENERATE,
    "validate.report_dir": VALIDATE_THRESHOLDS,
    "validate.max_missing_fraction": VALIDATE_THRESHOLDS,
    "validate.max_failed_fraction": VALIDATE_THRESHOLDS,
    "validate.min_clips_per_class": VALIDATE_THRESHOLDS,
    "validate.pixel_clips_per_shard": PIXEL_SAMPLE,
    "validate.seed": PIXEL_SAMPLE,
    "eval.num_clips": f"{EVALUATE}::test_train_then_evaluate_writes_metrics_plots_and_logs_to_the_training_run",
    "eval.num_crops": EVAL_SPLIT,
    "eval.batch_size": f"{EVALUATE}::test_evaluate_forwards_at_most_eval_batch_size_views_at_once",
    "eval.metrics_file": EVAL_OUTPUTS,
    "eval.per_class_file": EVAL_OUTPUTS,
    "eval.plots_dir": EVAL_OUTPUTS,
    "eval.allow_unfinished": UNFINISHED,
    "eval.attention_classes": EVAL_OUTPUTS,
    "register.model_name": UNFINISHED,
    "register.allow_unfinished": UNFINISHED,
    "register.serving.max_rows": SERVING,
    "register.serving.max_video_mb": SERVING,
    "register.serving.max_seconds": SERVING,
    "register.serving.max_frame_pixels": SERVING,
    "register.serving.max_source_frames": SERVING,
    "register.serving.decode_cpu_seconds": SERVING,
    "register.serving.request_seconds": SERVING,
    "register.serving.concurrent_decodes": SERVING,
    "register.serving.max_request_mb": SERVING,
    "promote.metric": PROMOTE,
    "promote.margin": PROMOTE,
    "mlflow.experiment": "tests/test_tracking.py::test_a_training_run_lands_in_the_experiment_mlflow_experiment_names",
}

# Keys no test can usefully set to another value, each with the reason. Keep it short: a key
# that only names a path is covered by a test that sets another path and finds the file there.
EXEMPT: dict[str, str] = {}


# ------------------------------------------------- reading a test's source


def find_test(node_id: str, root: Path = REPO) -> ast.FunctionDef:
    """The module-level test function that ``path::name[param]`` names; AssertionError if none."""
    path, _, name = node_id.partition("::")
    name = name.split("[", 1)[0]
    assert path.startswith("tests/") and name.startswith("test_"), f"{node_id} is not path::test_name"
    file = root / path
    assert file.is_file(), f"{node_id}: no file {path}"
    found = [node for node in ast.parse(file.read_text()).body if isinstance(node, ast.FunctionDef)]
    matches = [node for node in found if node.name == name]
    assert matches, f"{node_id}: {path} has no function {name}"
    return matches[0]


def _literal(text: str, key: str) -> Any:
    """The value of the override ``key=text`` as Hydra parses it, COMPUTED when ``text`` holds a
    formatted field; ConfigError when it is no override (prose such as ``(key=true),``)."""
    if _FIELD in text:
        return COMPUTED
    return parse_overrides([f"{key}={text}"])[0].value()


def settings_in(function: ast.FunctionDef, key: str) -> list[Any]:
    """The values ``function`` sets ``key`` to (COMPUTED for those known only at run time): its
    ``key=value`` overrides in string literals and f-strings, decorators included, docstring not,
    and its assignments to an attribute path ending in ``key``."""
    docstring = function.body[0] if function.body and ast.get_docstring(function) is not None else None
    skipped = {id(node) for node in ast.walk(docstring)} if docstring else set()
    texts: list[str] = []
    for node in ast.walk(function):
        if isinstance(node, ast.JoinedStr):
            skipped.update(id(part) for part in node.values)
            texts.append("".join(p.value if isinstance(p, ast.Constant) else _FIELD for p in node.values))
    values: list[Any] = []
    override = re.compile(rf"(?<![\w.]){re.escape(key)}=(\S*)")
    for node in ast.walk(function):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped:
            texts.append(node.value)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Attribute) and ast.unparse(target).endswith(f".{key}"):
                    values.append(node.value.value if isinstance(node.value, ast.Constant) else COMPUTED)
    for text in texts:
        for match in override.finditer(text):
            try:
                values.append(_literal(match[1], key))
            except ConfigError:  # prose such as "(train.resume=true)," in a message
                continue
    return values


@cache
def defaults() -> DictConfig:
    """The composed, resolved pipeline/conf: what params.yaml holds."""
    cfg = compose()
    OmegaConf.resolve(cfg)
    return cfg


def default_of(key: str) -> Any:
    value = OmegaConf.select(defaults(), key)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def sets_another_value(function: ast.FunctionDef, key: str) -> bool:
    """Whether ``function`` sets ``key`` at least once to a computed value or a literal other than its default."""
    return any(value is COMPUTED or value != default_of(key) for value in settings_in(function, key))


# ------------------------------------------------- the tables


@pytest.mark.parametrize("key", list(RULES))
def test_each_config_key_has_a_test_or_an_exemption(key: str) -> None:
    assert (key in KEY_TESTS) != (key in EXEMPT), (
        f"{key}: map it in KEY_TESTS to a test that sets it to a non-default value and checks its effect"
        if key not in EXEMPT
        else f"{key} is both in KEY_TESTS and EXEMPT"
    )
    if key in EXEMPT:
        assert EXEMPT[key].strip(), f"{key} is exempt without a reason"


def test_the_tables_name_only_config_keys() -> None:
    assert sorted((KEY_TESTS.keys() | EXEMPT.keys()) - RULES.keys()) == [], "not keys of pipeline.core.schema.RULES"


@pytest.mark.parametrize("key", list(KEY_TESTS))
def test_the_test_of_each_key_exists(key: str) -> None:
    find_test(KEY_TESTS[key])


@pytest.mark.parametrize("key", list(KEY_TESTS))
def test_the_test_of_each_key_sets_it_to_a_non_default_value(key: str) -> None:
    function = find_test(KEY_TESTS[key])
    values = settings_in(function, key)
    assert values, f"{KEY_TESTS[key]} never sets {key} itself (a {key}=... override or an assignment)"
    assert sets_another_value(function, key), f"{KEY_TESTS[key]} sets {key} only to its default {default_of(key)!r}"


# ------------------------------------------------- the checker can say no

SAMPLE = '''
@pytest.mark.parametrize("flag", ["data.hflip=false", "data.trim=false"])
def test_sample(flag, tmp_path):
    """Sets train.epochs=3 in its docstring only."""
    # train.batch_size=2 in a comment
    cfg = load(["train.lr=0.05", f"data.root={tmp_path}", "train.seed=0", "+train.momentum=0.5"])
    cfg.train.resume = True
    cfg.eval.num_crops = crops
    assert "(train.warmup_epochs=1)," in message
'''


@pytest.mark.parametrize(
    ("key", "values", "counts"),
    [
        ("data.hflip", [False], True),  # a parametrized override: false is not the default true
        ("data.trim", [False], False),  # false is its default
        ("train.epochs", [], False),  # named in the docstring only
        ("train.batch_size", [], False),  # in a comment
        ("train.lr", [0.05], False),  # the default's value
        ("data.root", [COMPUTED], True),  # an f-string field
        ("train.seed", [0], False),
        ("train.momentum", [0.5], True),  # Hydra's +key=value
        ("train.resume", [True], True),  # an attribute assignment
        ("eval.num_crops", [COMPUTED], True),  # assigned a variable
        ("train.warmup_epochs", [], False),  # prose, not an override
        ("train.grad_clip", [], False),  # not there at all
    ],
)
def test_the_checker_takes_overrides_and_assignments_only_and_refuses_defaults(
    tmp_path: Path, key: str, values: list[Any], counts: bool
) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests/test_sample.py").write_text(SAMPLE)
    function = find_test("tests/test_sample.py::test_sample[flag]", root=tmp_path)
    assert settings_in(function, key) == values
    assert sets_another_value(function, key) is counts


def test_the_checker_refuses_a_missing_test(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests/test_sample.py").write_text(SAMPLE)
    for node_id, says in [
        ("tests/test_sample.py::test_other", "has no function test_other"),
        ("tests/test_absent.py::test_sample", "no file tests/test_absent.py"),
        ("tests/test_sample.py", "is not path::test_name"),
    ]:
        with pytest.raises(AssertionError, match=says):
            find_test(node_id, root=tmp_path)
