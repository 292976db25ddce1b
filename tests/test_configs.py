"""Every config combination composes, overrides on the command line, and instantiates its model."""

from __future__ import annotations

import itertools

import pytest
import torch
from omegaconf import OmegaConf

import a2model
from pipeline.core.config import CONF_DIR, compose, load_config
from pipeline.runtime.net import build_net

GROUPS = {group: sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")) for group in ("model", "data", "train")}
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
TINY = [name for name in GROUPS["model"] if name.startswith("tiny_")]


def test_every_named_model_of_a2model_has_a_config():
    video_models = {name for name, shape in a2model.MODEL_INPUTS.items() if len(shape) == 4}
    assert set(GROUPS["model"]) == video_models
    assert {"tiny_a2", "r26_a2", "r50_a2"} <= set(GROUPS["model"])


@pytest.mark.parametrize(("model", "data", "train"), list(itertools.product(*GROUPS.values())))
def test_every_combination_composes_with_command_line_overrides(model, data, train):
    cfg = compose([f"model={model}", f"data={data}", f"train={train}", "train.epochs=3", "train.seed=7"])
    assert cfg.model.net.name == model and cfg.data.name == data
    assert cfg.train.epochs == 3 and cfg.train.seed == 7
    assert list(a2model.MODEL_INPUTS[model]) == [
        3,
        cfg.model.clip.num_frames,
        cfg.model.clip.crop_size,
        cfg.model.clip.crop_size,
    ]
    assert cfg.train.batch_size >= 1 and len(cfg.train.scale_jitter) == 2


@pytest.mark.parametrize("model", GROUPS["model"])
def test_every_model_config_instantiates_for_synthetic_and_kinetics_classes(model):
    cfg = compose([f"model={model}"])
    for num_classes in (4, 400):
        with torch.device("meta"):  # the ResNet-50s are built without allocating their weights
            net = build_net(cfg.model.net, num_classes)
        classifier = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
        assert classifier.out_features == num_classes


@pytest.mark.parametrize("model", TINY)
def test_tiny_models_classify_their_default_clip(model):
    cfg = compose([f"model={model}"])
    clip = cfg.model.clip
    net = build_net(cfg.model.net, 4).eval()
    with torch.no_grad():
        logits = net(torch.zeros(2, 3, clip.num_frames, clip.crop_size, clip.crop_size))
    assert logits.shape == (2, 4)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_are_deltas_on_the_defaults(experiment):
    base = compose()
    cfg = compose([f"experiment={experiment}"])
    assert cfg.data.name in ("kinetics400", "ucf101", "hmdb51") and cfg.train.device == "auto"
    assert cfg.generate == base.generate and cfg.validate == base.validate  # untouched sections
    assert compose([f"experiment={experiment}", "train.epochs=1"]).train.epochs == 1


def test_paper_experiment_is_the_kinetics_r50_a2_on_the_gpu_schedule():
    cfg = compose(["experiment=kinetics400_r50_a2"])
    assert (cfg.model.net.name, cfg.data.name, cfg.train.lr) == ("r50_a2", "kinetics400", 0.1)
    assert (cfg.model.clip.num_frames, cfg.model.clip.crop_size) == (8, 224)
    assert (cfg.eval.num_clips, cfg.eval.num_crops) == (10, 3)


@pytest.mark.parametrize("dataset", ["ucf101", "hmdb51"])
def test_fine_tuning_experiments_start_from_the_kinetics_model_with_a_new_head(dataset):
    cfg = compose([f"experiment={dataset}_finetune_r50_a2"])
    kinetics = compose(["experiment=kinetics400_r50_a2"])
    assert (cfg.data.name, cfg.data.root, cfg.data.trim) == (dataset, f"data/{dataset}", False)
    assert cfg.model.init.weights == f"{kinetics.train.out_dir}/last.pt" and list(cfg.model.init.exclude) == ["fc.*"]
    assert cfg.model.net.name == kinetics.model.net.name and cfg.model.clip == kinetics.model.clip
    assert cfg.train.lr_backbone_scale < 1 and cfg.train.out_dir != kinetics.train.out_dir


@pytest.mark.parametrize("model", GROUPS["model"])
def test_dvc_exp_run_composes_a_params_file_the_stages_read(model, tmp_path):
    """``dvc exp run -S model=<name>`` writes params.yaml with DVC's own Hydra code: same config as ours."""
    from dvc.utils.hydra import compose_and_dump

    params = tmp_path / "params.yaml"
    compose_and_dump(params, str(CONF_DIR), None, "config", str(tmp_path), [f"model={model}", "train.epochs=2"])
    cfg = load_config(params_file=params)
    expected = compose([f"model={model}", "train.epochs=2"])
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(expected, resolve=True)
    with torch.device("meta"):
        net = build_net(cfg.model.net, 4)
    assert isinstance(net, a2model.VideoResNet)


# Every model file, its family base (pipeline/conf/model/family/<family>.yaml) and the clip that base
# gives it (num_frames, stride, crop_size). A new model file needs a row here.
MODEL_FAMILIES = {
    "tiny_plain": ("tiny", (8, 4, 56)),
    "tiny_a2": ("tiny", (8, 4, 56)),
    "tiny_a2_frame": ("tiny", (8, 4, 56)),
    "tiny_nonlocal": ("tiny", (8, 4, 56)),
    "tiny_plain_deep": ("tiny", (8, 4, 56)),
    "r26_plain": ("r26", (16, 2, 112)),
    "r26_a2": ("r26", (16, 2, 112)),
    "r26_nonlocal": ("r26", (16, 2, 112)),
    "r29_plain": ("r26", (16, 2, 112)),
    "r50_plain": ("r50", (8, 8, 224)),
    "r50_a2": ("r50", (8, 8, 224)),
}
FAMILY_DIR = CONF_DIR / "model" / "family"


def test_model_choices_are_the_model_files_and_the_family_bases_are_not_among_them():
    assert set(MODEL_FAMILIES) == set(GROUPS["model"])  # listed from the folder: family/ is not a choice
    families = sorted(p.stem for p in FAMILY_DIR.glob("*.yaml"))
    assert families == sorted({family for family, _ in MODEL_FAMILIES.values()})
    assert not set(families) & set(GROUPS["model"])
    for family in families:  # a base alone names no model: net.name is ??? until a model file sets it
        base = OmegaConf.load(FAMILY_DIR / f"{family}.yaml")
        assert OmegaConf.is_missing(base.net, "name"), family


@pytest.mark.parametrize(("model", "family", "clip"), [(model, *row) for model, row in sorted(MODEL_FAMILIES.items())])
def test_every_model_file_is_its_family_base_plus_its_own_name(model, family, clip):
    own = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / f"{model}.yaml"))
    assert own.pop("defaults") == [f"family/{family}@_here_", "_self_"]  # _self_ last: the file's keys win
    assert own == {"net": {"name": model}}  # no _target_, no clip: those come from the base only

    cfg = compose([f"model={model}"]).model
    assert cfg.net.name == model
    base = OmegaConf.load(FAMILY_DIR / f"{family}.yaml")
    assert cfg.net._target_ == base.net._target_ == "a2model.build_model"
    assert cfg.clip == base.clip and (cfg.clip.num_frames, cfg.clip.stride, cfg.clip.crop_size) == clip
    # params.yaml's bytes (and DVC's params hash) follow key order: net{_target_, name}, clip, then init
    assert list(cfg) == ["net", "clip", "init"] and list(cfg.net) == ["_target_", "name"]
    assert cfg.init == base.init == {"weights": None, "inflate": None, "exclude": []}  # He initialisation
    assert list(cfg.clip) == ["num_frames", "stride", "crop_size"]
