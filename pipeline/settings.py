"""The stages' typed settings, made once from the config: the one place where the train and
evaluate stages and the ablation turn a ``DictConfig`` into the plain values the library takes.

Not an entry point: the stages and drivers import it, the library never does
(``tests/test_dvc_deps.py``). The validate stage keeps its own ``settings_from``.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.core.config import changed_settings, classes_file, config_md5, flatten
from pipeline.data.shard_store import shards_location
from pipeline.evaluation.plan import EvalPlan
from pipeline.runtime.checkpoint import CHECKPOINT_FILE, ClipGeometry, FrameFormat, ModelSpec, Schedule
from pipeline.tracking.run_record import RunSpec
from pipeline.training.settings import Augmentation, InitSettings, Optimiser, TrainSettings


def model_spec(cfg: DictConfig) -> ModelSpec:
    """``model.net``, ``model.clip``, the frame format of ``data`` and ``train.amp``."""
    data, clip = cfg.data, cfg.model.clip
    return ModelSpec(
        net=OmegaConf.to_container(cfg.model.net, resolve=True),
        clip=ClipGeometry(int(clip.num_frames), int(clip.stride), int(clip.crop_size)),
        frames=FrameFormat(
            float(data.fps),
            int(data.short_side),
            int(data.jpeg_quality),
            tuple(float(v) for v in data.mean),
            tuple(float(v) for v in data.std),
        ),
        amp=str(cfg.train.amp),
    )


def schedule(cfg: DictConfig) -> Schedule:
    tc = cfg.train
    return Schedule(float(tc.lr), float(tc.warmup_epochs), int(tc.epochs), int(tc.batch_size))


def run_spec(cfg: DictConfig) -> RunSpec:
    """How the training's MLflow run is named, described and tagged."""
    tc, clip = cfg.train, cfg.model.clip
    container = OmegaConf.to_container(cfg, resolve=True)
    recipe = (
        f"for {tc.epochs} epochs: batch {tc.batch_size}, SGD lr {tc.lr} with {tc.warmup_epochs} warm-up epoch(s) "
        f"then a cosine, seed {tc.seed}, clips of {clip.num_frames}×{clip.crop_size}² every {clip.stride} frames"
    )
    return RunSpec(
        experiment=str(cfg.mlflow.experiment),
        model_name=str(cfg.model.net.name),
        dataset=str(cfg.data.name),
        shards_dir=shards_location(cfg.data.shards_dir),
        recipe=recipe,
        changed=changed_settings(cfg),
        params={key: str(value) for key, value in flatten(container).items()},
        config_yaml=OmegaConf.to_yaml(cfg),
        config_md5=config_md5(container),
        clip_shape=(3, int(clip.num_frames), int(clip.crop_size), int(clip.crop_size)),
        system_metrics_s=float(tc.system_metrics_s),
    )


def init_settings(cfg: DictConfig) -> InitSettings:
    """``model.init``: the weights a training starts from (none: He initialisation)."""
    init = cfg.model.init
    return InitSettings(
        None if init.weights is None else str(init.weights),
        None if init.inflate is None else str(init.inflate),
        tuple(str(pattern) for pattern in init.exclude),
    )


def train_settings(cfg: DictConfig) -> TrainSettings:
    """Everything ``pipeline.training.fit.train`` reads, from ``model``, ``data``, ``train``, ``mlflow``."""
    tc, data = cfg.train, cfg.data
    return TrainSettings(
        model=model_spec(cfg),
        schedule=schedule(cfg),
        optimiser=Optimiser(
            float(tc.momentum),
            float(tc.weight_decay),
            float(tc.label_smoothing),
            float(tc.grad_clip),
            float(tc.lr_backbone_scale),
        ),
        augmentation=Augmentation(
            (float(tc.scale_jitter[0]), float(tc.scale_jitter[1])),
            bool(data.hflip),
            None if tc.max_crop_shift is None else float(tc.max_crop_shift),
        ),
        init=init_settings(cfg),
        run=run_spec(cfg),
        shards_dir=shards_location(data.shards_dir),
        train_split=str(data.train_split),
        val_split=str(data.val_split),
        classes_file=classes_file(data),
        out_dir=Path(tc.out_dir),
        metrics_csv=Path(tc.metrics_csv),
        seed=int(tc.seed),
        resume=bool(tc.resume),
        device=str(tc.device),
        compile=bool(tc.compile),
        channels_last=bool(tc.channels_last),
        decode_on=str(tc.decode_on),
        num_workers=int(tc.num_workers),
        val_every=int(tc.val_every),
    )


def eval_plan(cfg: DictConfig) -> EvalPlan:
    """Everything the evaluate stage reads: the checkpoint of ``train.out_dir``, ``data``, ``eval``."""
    ec = cfg.eval
    return EvalPlan(
        checkpoint=Path(cfg.train.out_dir) / CHECKPOINT_FILE,
        shards_dir=shards_location(cfg.data.shards_dir),
        split=str(cfg.data.val_split),
        num_clips=int(ec.num_clips),
        num_crops=int(ec.num_crops),
        crop_size=None if ec.crop_size is None else int(ec.crop_size),
        batch_size=int(ec.batch_size),
        device=str(cfg.train.device),
        num_workers=int(cfg.train.num_workers),
        allow_unfinished=bool(ec.get("allow_unfinished", False)),
        metrics_file=Path(ec.metrics_file),
        per_class_file=Path(ec.per_class_file),
        plots_dir=Path(ec.plots_dir),
        attention_classes=int(ec.attention_classes),
        experiment=str(cfg.mlflow.experiment),
    )
