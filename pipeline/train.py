"""Train a video classifier on the clip shards: ``python -m pipeline.train [key=value ...]``.

One process, or many under ``torchrun`` (DDP; NCCL on GPU, gloo on CPU). ``train.batch_size`` is
the *global* batch: each of the W processes takes ``batch_size // W`` clips of the same global
batch a single process would take (a ``DistributedSampler`` is used even for one process) and
BatchNorm statistics are synchronised, so W processes reproduce one process up to float rounding.

Writes to ``train.out_dir``: ``last.pt`` after every epoch (resumable with ``train.resume=true``;
on CPU the resumed run ends with exactly the weights of an uninterrupted one), ``model.pt`` (the
final state dict) and ``run_id.txt`` (the MLflow run, which ``evaluate`` logs to as well); and
per-epoch metrics to ``train.metrics_csv`` (a DVC plot) and to MLflow.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import random
import subprocess
import time
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Mapping

import mlflow
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from pipeline.core.config import classes_file, config_md5, stage_main
from pipeline.core.errors import ConfigError, StageError
from pipeline.training.distributed import DistInfo, all_reduce_sum, init_distributed, shutdown_distributed, sync_batchnorm
from pipeline.core.files import write_atomic
from pipeline.data.kinetics import load_classes
from pipeline.data.layout import MANIFEST_FILE
from pipeline.data.provenance import TOOLCHAIN_TAG, shards_toolchain
from pipeline.registry.tracking import setup_mlflow
from pipeline.data.transforms import RandomClip, TestTransform, TrainTransform, UniformClips, normalize

CHECKPOINT = "last.pt"
FINAL_WEIGHTS = "model.pt"
RUN_ID_FILE = "run_id.txt"
PROGRESS_EVERY = 10  # steps between progress-bar updates (each one syncs the GPU)
METRIC_COLUMNS = ("epoch", "train_loss", "train_top1", "val_clip_top1", "lr", "epoch_time", "clips_per_s")


# ---------------------------------------------------------------- building blocks shared with evaluate


def resolve_device(setting: str) -> torch.device:
    """``auto`` → CUDA when present else CPU; ``cpu``/``cuda`` as asked (error if CUDA is absent)."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible; use train.device=cpu or auto")
    if setting not in ("cpu", "cuda"):
        raise ConfigError(f"train.device={setting!r} is not one of auto, cpu, cuda")
    return torch.device(setting)


NET_FACTORY = "a2model.build_model"  # the only callable a checkpoint's model.net may name


def _video_model_name(name: Any) -> str:
    """``name`` when it is one of a2model's video models, else a ConfigError listing them."""
    import a2model

    video_models = sorted(n for n, shape in a2model.MODEL_INPUTS.items() if len(shape) == 4)  # (C, T, H, W)
    if name not in video_models:
        raise ConfigError(f"unknown video model {name!r} (model.net.name); choose one of: {', '.join(video_models)}")
    return str(name)


def build_net(net_cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    """Instantiate the project's own ``model.net`` config (``a2model.build_model``) for ``num_classes``."""
    from hydra.utils import instantiate

    _video_model_name(net_cfg.get("name"))
    return instantiate(net_cfg, num_classes=num_classes)


def net_from_values(net_values: Mapping[str, Any], num_classes: int, source: str) -> nn.Module:
    """The net that a ``model.net`` read from data (a checkpoint) describes, built by name.

    Data never names code: ``_target_`` may only be ``a2model.build_model`` (what the project
    writes) and every other key is a plain keyword value (bool, int, float, str) of that factory,
    so a crafted checkpoint cannot make Hydra instantiate a callable of its choosing.
    """
    import a2model

    values = dict(net_values)
    target = values.pop("_target_", NET_FACTORY)
    if target != NET_FACTORY:
        raise StageError(f"{source}: model.net._target_ is {target!r}; a checkpoint is data and only builds "
                         f"{NET_FACTORY} by name: retrain with `python -m pipeline.train`")
    name = _video_model_name(values.pop("name", None))
    for key, value in values.items():
        if key.startswith("_") or isinstance(value, (Mapping, list, tuple)) or not isinstance(value, (bool, int, float, str)):
            raise StageError(f"{source}: model.net.{key} is not a plain value ({type(value).__name__}); "
                             "a checkpoint's model config holds a model name and plain keyword values only")
    return a2model.build_model(name, num_classes, **values)


def open_split(shards_dir: Path, split: str, sampler: Any, transform: Any, seed: int = 0) -> Any:
    """The ``ClipDataset`` of ``split``, or a one-line error when its shards are missing."""
    from pipeline.data.shards import ClipDataset

    if not Path(shards_dir).is_dir():
        raise StageError(f"shards dir {shards_dir} not found (data.shards_dir); run `python -m pipeline.preprocess` first")
    return ClipDataset(shards_dir, split, sampler, transform, seed)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a ``last.pt`` with ``weights_only=True`` (tensors and plain containers only)."""
    if not Path(path).is_file():
        raise StageError(f"checkpoint {path} not found; run `python -m pipeline.train` first (train.out_dir)")
    return torch.load(path, map_location="cpu", weights_only=True)


def model_from_checkpoint(checkpoint: Mapping[str, Any], source: Path) -> nn.Module:
    """The trained network of a checkpoint (read from ``source``), built from its config's values."""
    try:
        net_values, classes, weights = checkpoint["config"]["model"]["net"], checkpoint["classes"], checkpoint["model"]
    except (KeyError, TypeError):
        raise StageError(f"{source} is not a checkpoint of the train stage (no config.model.net, classes "
                         "or model); retrain with `python -m pipeline.train`") from None
    net = net_from_values(net_values, len(classes), str(source))
    try:
        net.load_state_dict(weights)
    except (RuntimeError, TypeError) as err:
        raise StageError(f"{source}: weights do not fit {net_values.get('name')!r} "
                         f"({str(err).splitlines()[0]})") from None
    return net


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temp name beside ``path``, then rename (never a half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------- optimisation


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """SGD groups: weight decay on conv/linear weights, none on norm parameters and biases."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base lr at iteration ``step``: linear warm-up, then half a cosine to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# ---------------------------------------------------------------- reproducibility


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed the global RNGs; deterministic kernels on CPU, cuDNN autotuning on GPU."""
    random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the global torch RNG (dropout) for one epoch of one process.

    Re-seeding every epoch makes a resumed run draw what an uninterrupted one draws, and
    different ranks draw different dropout masks for their different clips.
    """
    digest = hashlib.sha256(f"{seed}/{epoch}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive Python's RNG from the worker's torch seed."""
    random.seed(torch.initial_seed() % 2**32)


def rng_state() -> dict[str, Any]:
    """Global RNG states as tensors (loadable with ``weights_only=True``)."""
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "python": torch.tensor(internal, dtype=torch.int64)}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Undo ``rng_state``."""
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# ---------------------------------------------------------------- provenance for MLflow


def git_commit() -> str:
    """``git rev-parse HEAD`` of the working directory, ``unknown`` outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def data_fingerprint(shards_dir: Path) -> dict[str, str]:
    """Tags naming the training data: manifest and shard-list hashes, dvc.lock's, the toolchain."""
    shards_dir = Path(shards_dir)
    manifest = shards_dir / MANIFEST_FILE
    listing = "".join(
        f"{p.relative_to(shards_dir).as_posix()}\t{p.stat().st_size}\n" for p in sorted(shards_dir.rglob("*.tar"))
    )
    tags = {
        "data.manifest_md5": hashlib.md5(manifest.read_bytes()).hexdigest() if manifest.is_file() else "missing",
        "data.shards_list_md5": hashlib.md5(listing.encode()).hexdigest(),
        **{f"{TOOLCHAIN_TAG}{tool}": version for tool, version in shards_toolchain(shards_dir).items()},
    }
    lock = Path("dvc.lock")
    if lock.is_file():
        import yaml

        for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
            for out in stage.get("outs", []):
                if Path(out.get("path", "")) == shards_dir and "md5" in out:
                    tags["data.dvc_md5"] = out["md5"]
    return tags


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


@contextmanager
def mlflow_run(cfg: DictConfig, run_id: str | None, enabled: bool) -> Iterator[str | None]:
    """Start (or, given ``run_id``, continue) the training's MLflow run; no-op when not enabled."""
    if not enabled:
        yield None
        return

    experiment_id = setup_mlflow(cfg.mlflow.experiment)
    if run_id:
        context = mlflow.start_run(run_id=run_id)
    else:
        context = mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{cfg.model.net.name}")
    with context as run:
        yield run.info.run_id


def log_run_start(cfg: DictConfig, net: nn.Module, clip_shape: tuple[int, ...]) -> None:
    """Log what identifies a new training run: config, params, model size, data hashes, commit."""
    import a2model

    container = OmegaConf.to_container(cfg, resolve=True)
    mlflow.log_params({k: str(v) for k, v in flatten(container).items()})
    mlflow.log_text(OmegaConf.to_yaml(cfg), "config.yaml")
    probe = copy.deepcopy(net).to("cpu").eval()
    with torch.no_grad():
        size = {"model_params": a2model.count_params(probe), "model_macs": a2model.count_macs(probe, (1, *clip_shape))}
    mlflow.log_metrics({k: float(v) for k, v in size.items()})
    mlflow.set_tags({"git_commit": git_commit(), "model_name": cfg.model.net.name, "config_md5": config_md5(container),
                     **data_fingerprint(cfg.data.shards_dir)})


def log_epoch_metrics(row: Mapping[str, float | None]) -> None:
    """Log one epoch's metrics to the active run at step ``epoch``."""
    mlflow.log_metrics({k: v for k, v in row.items() if v is not None and k != "epoch"}, step=int(row["epoch"]))


def backfill_epoch_metrics(run_id: str, history: list[dict[str, float]]) -> None:
    """On resume: log the checkpointed epochs the run lacks (killed between checkpoint and log).

    Epochs are logged only after their checkpoint, so no epoch is ever logged twice.
    """
    logged = {m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "train_loss")}
    for row in history:
        if int(row["epoch"]) not in logged:
            log_epoch_metrics(row)


def mark_abandoned_run(run_id_file: Path, experiment: str) -> None:
    """A new training in ``out_dir``: mark its previous run KILLED if it never finished.

    A ``kill -9`` leaves the MLflow run RUNNING forever; the next run in the same place is the
    first to know it died.
    """
    if not run_id_file.is_file():
        return
    from mlflow.exceptions import MlflowException

    setup_mlflow(experiment)
    client = mlflow.MlflowClient()
    try:
        previous = client.get_run(run_id_file.read_text().strip())
    except MlflowException:
        return
    if previous.info.status == "RUNNING":
        client.set_tag(previous.info.run_id, "a2nets.abandoned", "killed before its last epoch; a new run replaced it")
        client.set_terminated(previous.info.run_id, status="KILLED")


def training_finished(checkpoint: Mapping[str, Any]) -> bool:
    """True when the checkpoint holds the last epoch its own config asked for."""
    try:
        return int(checkpoint["epoch"]) >= int(checkpoint["config"]["train"]["epochs"])
    except (KeyError, TypeError, ValueError):
        return False


def check_finished(checkpoint: Mapping[str, Any], source: Path, allow_key: str, allowed: bool) -> bool:
    """Refuse an unfinished training's checkpoint unless ``allow_key`` is true; True if unfinished."""
    if training_finished(checkpoint):
        return False
    if not allowed:
        epochs = (checkpoint.get("config") or {}).get("train", {}).get("epochs", "?")
        raise StageError(f"{source} is epoch {checkpoint.get('epoch', '?')} of {epochs}: its training did not "
                         f"finish; resume it (train.resume=true) or set {allow_key}=true to use it anyway")
    return True


def write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    """Per-epoch metrics as CSV (rewritten whole, atomically) for ``dvc plots``."""
    lines = [",".join(METRIC_COLUMNS)]
    for row in history:
        lines.append(",".join("" if row.get(c) is None else f"{row[c]:.6g}" for c in METRIC_COLUMNS))
    write_atomic(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------- loops


def to_model_input(batch_frames: torch.Tensor, device: torch.device, cfg: DictConfig) -> torch.Tensor:
    """uint8 ``(N, V, C, T, H, W)`` → normalised float ``(N·V, C, T, H, W)`` on ``device``."""
    clips = normalize(batch_frames.to(device, non_blocking=True).flatten(0, 1), cfg.data.mean, cfg.data.std)
    if device.type == "cuda" and cfg.train.channels_last:
        clips = clips.contiguous(memory_format=torch.channels_last_3d)
    return clips


def autocast(device: torch.device, amp: str) -> Any:
    """bf16 autocast on CUDA when ``train.amp=bf16``; nothing otherwise."""
    if device.type == "cuda" and amp == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def clip_top1(net: nn.Module, loader: DataLoader, device: torch.device, cfg: DictConfig, info: DistInfo) -> float:
    """Top-1 of one centre clip per video over this process's share of ``loader``, summed over processes."""
    net.eval()
    counts = torch.zeros(2, dtype=torch.float64)
    for batch in loader:
        with autocast(device, cfg.train.amp):
            logits = net(to_model_input(batch["frames"], device, cfg))
        counts += torch.tensor([(logits.argmax(1).cpu() == batch["label"]).sum().item(), len(batch["label"])])
    net.train()
    counts = all_reduce_sum(counts, info)
    return float(counts[0] / counts[1]) if counts[1] else float("nan")


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    cfg: DictConfig,
    info: DistInfo,
    desc: str,
) -> dict[str, float]:
    """One pass over ``loader``; returns the global mean loss, top-1 and clips/s."""
    model.train()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, clips
    start = time.perf_counter()
    bar = tqdm(loader, desc=desc, disable=not info.is_main, dynamic_ncols=True, leave=False)
    for step, batch in enumerate(bar):
        clips = to_model_input(batch["frames"], device, cfg)
        labels = batch["label"].to(device, non_blocking=True)
        with autocast(device, cfg.train.amp):
            logits = model(clips)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.train.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        scheduler.step()
        totals += torch.stack(
            [loss.detach().double() * len(labels), (logits.argmax(1) == labels).sum().double(), totals.new_tensor(len(labels))]
        )
        if info.is_main and (step % PROGRESS_EVERY == 0 or step == len(loader) - 1):
            rate = len(labels) * (step + 1) * info.world_size / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.4f}", clips_s=f"{rate:.1f}")
    elapsed = time.perf_counter() - start
    totals = all_reduce_sum(totals, info).cpu()
    return {
        "train_loss": float(totals[0] / totals[2]),
        "train_top1": float(totals[1] / totals[2]),
        "epoch_time": elapsed,
        "clips_per_s": float(totals[2]) / elapsed,
    }


# ---------------------------------------------------------------- the stage


def train(cfg: DictConfig) -> Path:
    """Train ``cfg.model`` on ``cfg.data`` with ``cfg.train``; return the checkpoint path."""
    tc = cfg.train
    device = resolve_device(tc.device)
    classes = load_classes(classes_file(cfg.data))
    clip = cfg.model.clip
    info = init_distributed(device.type)
    try:
        if device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
        if tc.batch_size % info.world_size:
            raise ConfigError(f"train.batch_size={tc.batch_size} is not divisible by the {info.world_size} processes")
        seed_everything(tc.seed, device)
        train_set = open_split(
            Path(cfg.data.shards_dir),
            cfg.data.train_split,
            RandomClip(clip.num_frames, clip.stride),
            TrainTransform(clip.crop_size, tuple(tc.scale_jitter), bool(cfg.data.hflip), tc.max_crop_shift),
            tc.seed,
        )
        if len(train_set) < tc.batch_size:
            raise ConfigError(
                f"split {cfg.data.train_split!r} has {len(train_set)} clips, fewer than train.batch_size={tc.batch_size}"
            )
        sampler = DistributedSampler(
            train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=tc.seed, drop_last=True
        )
        loader = DataLoader(
            train_set,
            batch_size=tc.batch_size // info.world_size,
            sampler=sampler,
            num_workers=tc.num_workers,
            pin_memory=device.type == "cuda",
            drop_last=True,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(tc.seed),
        )
        val_loader = validation_loader(cfg, info)

        net = build_net(cfg.model.net, len(classes))
        if info.distributed:
            net = sync_batchnorm(net, device.type)
        net.to(device)
        if device.type == "cuda" and tc.channels_last:
            net.to(memory_format=torch.channels_last_3d)
        optimizer = torch.optim.SGD(parameter_groups(net, tc.weight_decay), lr=tc.lr, momentum=tc.momentum)
        steps_per_epoch = len(loader)
        schedule = partial(lr_factor, warmup_steps=round(tc.warmup_epochs * steps_per_epoch), total_steps=tc.epochs * steps_per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

        out_dir = Path(tc.out_dir)
        checkpoint_path = out_dir / CHECKPOINT
        start_epoch, history, run_id = 0, [], None
        if tc.resume and checkpoint_path.is_file():
            state = load_checkpoint(checkpoint_path)
            if state["model_name"] != cfg.model.net.name:
                raise ConfigError(
                    f"{checkpoint_path} holds {state['model_name']!r}, not {cfg.model.net.name!r}; "
                    "set train.resume=false or another train.out_dir"
                )
            net.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            restore_rng_state(state["rng"])
            start_epoch, history, run_id = state["epoch"], list(state["history"]), state["mlflow_run_id"]

        model: nn.Module = net
        if info.distributed:
            model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        if tc.compile:
            model = torch.compile(model)

        if info.is_main and start_epoch == 0:
            mark_abandoned_run(out_dir / RUN_ID_FILE, cfg.mlflow.experiment)
        with mlflow_run(cfg, run_id, info.is_main) as run_id:
            if info.is_main:
                out_dir.mkdir(parents=True, exist_ok=True)
                write_atomic(out_dir / RUN_ID_FILE, f"{run_id}\n")
                if start_epoch == 0:
                    log_run_start(cfg, net, (3, clip.num_frames, clip.crop_size, clip.crop_size))
                else:
                    backfill_epoch_metrics(run_id, history)
            for epoch in range(start_epoch, tc.epochs):
                sampler.set_epoch(epoch)
                train_set.set_epoch(epoch)
                torch.manual_seed(epoch_seed(tc.seed, epoch, info.rank))
                row: dict[str, float] = {"epoch": epoch + 1}
                row |= train_epoch(model, loader, optimizer, scheduler, device, cfg, info, f"epoch {epoch + 1}/{tc.epochs}")
                row["lr"] = optimizer.param_groups[0]["lr"]
                validate_now = val_loader is not None and ((epoch + 1) % tc.val_every == 0 or epoch + 1 == tc.epochs)
                row["val_clip_top1"] = clip_top1(net, val_loader, device, cfg, info) if validate_now else None
                history.append(row)
                if info.is_main:  # the checkpoint first: a kill before it leaves no metric of this epoch
                    atomic_save(
                        {
                            "model": net.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "epoch": epoch + 1,
                            "rng": rng_state(),
                            "config": OmegaConf.to_container(cfg, resolve=True),
                            "classes": list(classes),
                            "model_name": str(cfg.model.net.name),
                            "clip": {k: int(v) for k, v in clip.items()},
                            "history": history,
                            "mlflow_run_id": run_id,
                        },
                        checkpoint_path,
                    )
                    log_epoch_metrics(row)
                    write_metrics_csv(Path(tc.metrics_csv), history)
                    print(" ".join(f"{k}={v:.4g}" for k, v in row.items() if v is not None), flush=True)
            if info.is_main:
                atomic_save(net.state_dict(), out_dir / FINAL_WEIGHTS)
                if history:
                    mlflow.log_artifact(str(tc.metrics_csv))
        return checkpoint_path
    finally:
        shutdown_distributed()


def validation_loader(cfg: DictConfig, info: DistInfo) -> DataLoader | None:
    """One centre clip and crop per validation video, this process's share (every W-th video).

    None when ``train.val_every`` is 0 or the split has no shards (evaluate reports the real
    multi-view accuracy).
    """
    from pipeline.data.shards import shard_paths

    if not cfg.train.val_every or not shard_paths(Path(cfg.data.shards_dir), cfg.data.val_split):
        return None
    clip = cfg.model.clip
    val_set = open_split(
        Path(cfg.data.shards_dir),
        cfg.data.val_split,
        UniformClips(clip.num_frames, clip.stride, 1),
        TestTransform(clip.crop_size, 1),
    )
    share = Subset(val_set, range(info.rank, len(val_set), info.world_size))
    return DataLoader(share, batch_size=cfg.train.batch_size // info.world_size, num_workers=cfg.train.num_workers)


def run(cfg: DictConfig) -> int:
    """Stage entry: train and say where the weights are."""
    checkpoint = train(cfg)
    print(f"trained {cfg.model.net.name}: {checkpoint}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
