"""The config loader: params.yaml in sync with pipeline/conf, overrides, clear errors."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipeline.core.config import CONF_DIR, PARAMS_FILE, classes_file, compose, load_config, write_params
from pipeline.core.errors import ConfigError
from pipeline.core.schema import BOOLEAN, TEXT, choice, integer, number, numbers, optional

REPO = Path(__file__).resolve().parents[1]


def test_committed_params_yaml_is_the_composed_defaults(tmp_path: Path) -> None:
    fresh = tmp_path / "params.yaml"
    write_params(fresh)
    assert fresh.read_text() == (REPO / PARAMS_FILE).read_text(), "run `make params` and commit params.yaml"


def test_plain_override_merges_onto_params_file(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    write_params(params)
    cfg = load_config(["train.epochs=3", "data.root=/x/y", "data.mean=[0.1,0.2,0.3]"], params_file=params)
    assert load_config(["data.classes=/c.txt"], params_file=params).data.classes == "/c.txt"
    assert cfg.train.epochs == 3
    assert cfg.data.root == "/x/y"
    assert list(cfg.data.mean) == [0.1, 0.2, 0.3]
    assert classes_file(cfg.data) == Path("/x/y/classes.txt")


def test_hydra_override_grammar_adds_force_adds_and_deletes_keys(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    write_params(params)
    cfg = load_config(
        [
            "+model.net.dropout=0.2",
            "++train.epochs=5",
            "++train.extra=1",
            "~eval.allow_unfinished",
            "train.lr=1e-4",
            "data.root='a b'",
        ],
        params_file=params,
    )
    assert cfg.model.net.dropout == 0.2 and cfg.train.epochs == 5 and cfg.train.extra == 1
    assert "allow_unfinished" not in cfg.eval and cfg.train.lr == 1e-4 and cfg.data.root == "a b"
    assert load_config(["~train.epochs=60", "++train.epochs=7"], params_file=params).train.epochs == 7


def test_params_file_is_what_stages_read(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    write_params(params)
    edited = OmegaConf.load(params)
    edited.train.epochs = 77
    OmegaConf.save(edited, params)
    assert load_config([], params_file=params).train.epochs == 77


def test_group_override_recomposes(tmp_path: Path) -> None:
    cfg = load_config(["model=tiny_plain", "train.epochs=2"], params_file=tmp_path / "params.yaml")
    assert cfg.model.net.name == "tiny_plain"
    assert cfg.train.epochs == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", r"unknown config key 'train.epoch'; did you mean train.epochs\? \(prefix it with \+"),
        ("lr=0.1", r"unknown config key 'lr'; \(prefix it with \+ to add a new key\)"),  # nothing close at the top
        ("data.fsp=5", "did you mean data.fps"),
        ("train.zzzz=1", r"'train.zzzz'; \(prefix"),
        ("nosuch.thing=1", r"'nosuch.thing'; \(prefix"),
        ("train.epochs", "is not key=value"),
        ("+train.epochs=3", "train.epochs exists already; drop the +"),
        ("~train.epoch", "no config key 'train.epoch' to delete"),
        ("~train.epochs=999", "train.epochs is 60, not 999"),
        ("train.epochs=1,2", "is a sweep"),
    ],
)
def test_bad_override_is_one_clear_line(tmp_path: Path, override: str, message: str) -> None:
    params = tmp_path / "params.yaml"
    write_params(params)
    with pytest.raises(ConfigError, match=message) as err:
        load_config([override], params_file=params)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("override", "group"),
    [
        ("model=no_such_model", "model"),
        ("experiment=kinetics400_r50_a3", "experiment"),  # a typo of kinetics400_r50_a2
        ("+experiment=kinetics400_r50_a3", "experiment"),
        ("experiment=/etc/passwd", "experiment"),
        ("data=kinetics", "data"),
        ("train=gpu", "train"),
    ],
)
def test_unknown_group_option_is_one_line_listing_the_choices(tmp_path: Path, override: str, group: str) -> None:
    choices = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    with pytest.raises(ConfigError) as err:
        load_config([override], params_file=tmp_path / "params.yaml")
    assert str(err.value) == (
        f"{override!r}: no {group} config {override.split('=')[1]!r}; choose one of {', '.join(choices)} "
        f"(pipeline/conf/{group}/)"
    )


def test_an_experiment_is_composed_over_the_defaults() -> None:
    assert compose().model.net.name == "tiny_a2"
    assert compose(["experiment=kinetics400_r50_a2"]).model.net.name == "r50_a2"


BAD_VALUES = [  # (override, what the one line says)
    ("train.epochs=abc", "train.epochs='abc' is not valid: set it to a whole number >= 1"),
    ("train.epochs=1.5", "train.epochs=1.5 is not valid"),
    ("train.epochs=0", "train.epochs=0 is not valid"),
    ("train.epochs=true", "train.epochs=True is not valid"),
    ("train.batch_size=0", "train.batch_size=0 is not valid"),
    ("train.lr=-1", "train.lr=-1 is not valid: set it to a number > 0"),
    ("train.num_workers=-1", "train.num_workers=-1 is not valid: set it to a whole number >= 0"),
    ("train.device=tpu", "train.device='tpu' is not valid: set it to one of auto, cpu, cuda"),
    ("data.fps=abc", "data.fps='abc' is not valid: set it to a number > 0"),
    ("data.fps=nan", "data.fps=nan is not valid"),  # Hydra's grammar: nan and inf are floats
    ("data.fps=inf", "data.fps=inf is not valid"),
    ("data.short_side=abc", "data.short_side='abc' is not valid: set it to a whole number >= 2"),
    ("data.shards_dir=", "data.shards_dir='' is not valid: set it to a non-empty string"),
    ("data.shards_dir=null", "data.shards_dir=None is not valid: set it to a non-empty string"),
    ("data.shards_dir=' '", "data.shards_dir=' ' is not valid"),
    ("data.trim=maybe", "data.trim='maybe' is not valid: set it to true or false"),
    ("data.trim=1", "data.trim=1 is not valid: set it to true or false"),
    ("data.jpeg_quality=101", "data.jpeg_quality=101 is not valid: set it to a whole number >= 1 <= 100"),
    ("data.mean=[0.5,0.5]", "data.mean=[0.5, 0.5] is not valid: set it to a list of 3 values"),
    ("eval.num_crops=2", "eval.num_crops=2 is not valid: set it to one of 1, 3"),
    ("validate.max_missing_fraction=1.5", "validate.max_missing_fraction=1.5 is not valid"),
    ("generate.num_missing=-1", "generate.num_missing=-1 is not valid"),
]


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("make", "accepted", "refused", "expect"),
    [
        (lambda: integer(2), [2, 10**9], [1, 2.0, True, "2"], "a whole number >= 2"),
        (lambda: integer(1, 100), [1, 100], [0, 101], "a whole number >= 1 <= 100"),
        (lambda: integer(high=5), [-3, 5], [6], "a whole number <= 5"),
        (lambda: number(above=0), [1e-9, 7], [0, -1, NAN, INF, True], "a number > 0"),
        (lambda: number(at_least=0, below=1), [0, 0.99], [1, -0.01], "a number >= 0 and < 1"),
        (lambda: number(at_least=0, at_most=1), [0, 0.5, 1], [1.01, -0.01], "a number >= 0 and <= 1"),
        (lambda: number(), [-2.5, 0], [NAN, None], "a number"),
        (lambda: BOOLEAN, [True, False], [1, "true"], "true or false"),
        (lambda: TEXT, ["a"], ["", " ", None, 1], "a non-empty string"),
        (lambda: choice(1, 3), [1, 3], [2, 1.0, True, "1"], "one of 1, 3"),
        (
            lambda: numbers(2, number(above=0)),
            [[1, 2], (0.5, 3)],
            [[1], [1, 0], [1, 2, 3]],
            "a list of 2 values, each number > 0",
        ),
        (lambda: optional(number(above=0)), [None, 0.1], [0], "null or a number > 0"),
    ],
)
def test_a_rule_takes_the_values_within_its_bounds_and_says_which(make, accepted, refused, expect) -> None:
    """Bounds are inclusive where they say >= or <=, types strict (a bool is no number), and the
    text the one-line error quotes names exactly those bounds. (Each rule is made in the test, so
    that mutation testing sees the rule factories run.)"""
    rule = make()
    assert [rule.accepts(v) for v in accepted] == [True] * len(accepted)
    assert [rule.accepts(v) for v in refused] == [False] * len(refused)
    assert rule.expect == expect


@pytest.mark.parametrize(("override", "message"), BAD_VALUES)
def test_a_bad_config_value_stops_every_stage_in_one_line_writing_nothing(
    tmp_path, monkeypatch, capsys, override, message
) -> None:
    from pipeline.toolchain import main

    write_params(tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    assert main([override]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {message}" + err[len(f"error: {message}") :] and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_every_shipped_config_satisfies_the_schema() -> None:
    from pipeline.core.schema import config_problem

    for experiment in [None, *(p.stem for p in (REPO / "pipeline/conf/experiment").glob("*.yaml"))]:
        for model in (p.stem for p in (REPO / "pipeline/conf/model").glob("*.yaml")):
            overrides = ([f"experiment={experiment}"] if experiment else []) + [f"model={model}"]
            cfg = compose(overrides)
            OmegaConf.resolve(cfg)
            assert config_problem(cfg) is None, overrides


HOSTILE = [  # (stage, override, what the one line says): a traceback or a 100 KB echo before
    ("pipeline.train", "~train", "'~train': every stage needs a train config; choose another one"),
    ("pipeline.preprocess", "~data", "'~data': every stage needs a data config"),
    ("pipeline.toolchain", "~video", "the config has no 'video', which this stage needs; do not delete it"),
    ("pipeline.toolchain", "~video.ffmpeg", "the config has no 'video.ffmpeg', which this stage needs"),
    ("pipeline.train", "train.lr=" + "1" * 130_000, "… (130,011 characters) is not key=value"),
    ("pipeline.train", "+train.x=" + "[" * 60_000 + "]" * 60_000, "or its value is too large or too deeply nested"),
    ("pipeline.train", "train.device=" + "x" * 100_000, "… (100,002 characters) is not valid: set it to one of"),
]


@pytest.mark.parametrize(("stage", "override", "says"), HOSTILE, ids=lambda v: str(v)[:24])
def test_a_hostile_override_is_one_short_line_and_exit_2(tmp_path, monkeypatch, capsys, stage, override, says) -> None:
    import importlib

    monkeypatch.chdir(tmp_path)
    assert importlib.import_module(stage).main([override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err[:300]
    assert len(err) < 300 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], {"train.metrics_csv": "reports/train_metrics.csv", "eval.metrics_file": "reports/metrics.json"}),
        (  # a hand run elsewhere keeps its reports with it
            ["train.out_dir=/tmp/x"],
            {
                "train.metrics_csv": "/tmp/x/train_metrics.csv",
                "eval.metrics_file": "/tmp/x/eval/metrics.json",
                "eval.per_class_file": "/tmp/x/eval/per_class.json",
                "eval.plots_dir": "/tmp/x/eval/plots",
            },
        ),
        (
            ["train.out_dir=/tmp/x", "train.metrics_csv=/tmp/m.csv", "model=tiny_plain"],  # named: kept
            {"train.metrics_csv": "/tmp/m.csv", "eval.metrics_file": "/tmp/x/eval/metrics.json"},
        ),
        (["train.epochs=2"], {"train.metrics_csv": "reports/train_metrics.csv"}),
    ],
)
def test_a_run_with_another_out_dir_keeps_its_reports_with_it(tmp_path: Path, overrides, expected) -> None:
    params = tmp_path / "params.yaml"
    write_params(params)
    cfg = load_config(overrides, params_file=params)
    assert {key: OmegaConf.select(cfg, key) for key in expected} == expected
