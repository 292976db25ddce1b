"""The config loader: params.yaml in sync with pipeline/conf, overrides, clear errors."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipeline.config import ConfigError, PARAMS_FILE, classes_file, compose, load_config, write_params

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
        ("train.epoch=3", "unknown config key 'train.epoch'"),
        ("train.epochs", "is not key=value"),
    ],
)
def test_bad_override_is_one_clear_line(tmp_path: Path, override: str, message: str) -> None:
    params = tmp_path / "params.yaml"
    write_params(params)
    with pytest.raises(ConfigError, match=message) as err:
        load_config([override], params_file=params)
    assert "\n" not in str(err.value)


def test_unknown_group_option_names_it() -> None:
    with pytest.raises(ConfigError, match="no_such_model"):
        compose(["model=no_such_model"])
