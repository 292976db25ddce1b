"""The train stage on real shards (real ffmpeg → preprocess): outputs, MLflow, resume, DDP, errors."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict
from pathlib import Path

import mlflow
import pytest
import torch
import torch.multiprocessing as mp
from omegaconf import DictConfig

import pipeline.train as train_stage
from pipeline.data.shards import ClipDataset
from pipeline.data.transforms import TrainTransform, resize_short_side
from pipeline.runtime.checkpoint import FORMAT_VERSION, Checkpoint
from pipeline.training.distributed import DistInfo, SyncBatchNorm
from pipeline.training.optim import WarmupCosine, parameter_groups

from helpers import (
    config_loaders,
    config_model_input,
    free_port,
    read_manifest,
    record_built_nets,
    tiny_config,
    tiny_overrides,
    train_config,
)


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_writes_checkpoint_weights_metrics_and_one_mlflow_run(training_data, workdir):
    cfg = tiny_config(training_data, workdir)
    checkpoint_path = train_config(cfg)

    record = torch.load(checkpoint_path, weights_only=True)  # plain data: loads without the project's classes
    assert record["format"] == "a2nets.checkpoint" and record["format_version"] == FORMAT_VERSION
    checkpoint = Checkpoint.load(checkpoint_path)
    assert checkpoint.epoch == 2 and checkpoint.finished
    assert checkpoint.model_name == "tiny_a2"
    assert checkpoint.classes == ["abseiling", "air drumming", "zumba"]
    assert asdict(checkpoint.clip) == {"num_frames": 4, "stride": 1, "crop_size": 32}
    assert checkpoint.schedule.epochs == 2
    assert checkpoint.optimizer["state"] and {"torch", "python"} <= checkpoint.rng.keys()
    assert "scheduler" not in record  # the schedule is the config's, not the checkpoint's
    assert state_dicts_equal(checkpoint.build_net(checkpoint_path).state_dict(), checkpoint.weights)
    assert sorted(p.name for p in (workdir / "model").iterdir()) == ["last.pt", "run_id.txt"]  # no temp file left

    lines = (workdir / "train_metrics.csv").read_text().splitlines()
    assert lines[0].split(",")[:3] == ["epoch", "train_loss", "train_top1"]
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2"]

    run_id = (workdir / "model/run_id.txt").read_text().strip()
    assert run_id == checkpoint.mlflow_run_id
    run = mlflow.get_run(run_id)
    assert run.data.params["train.epochs"] == "2"
    assert run.data.params["model.net.name"] == "tiny_a2"
    assert {
        "train_loss",
        "train_top1",
        "lr",
        "val_clip_top1",
        "clips_per_s",
    } <= run.data.metrics.keys()
    assert int(run.data.params["model_params"]) > 0 and int(run.data.params["model_macs"]) > 0  # no 1-point charts
    assert len(run.data.tags["data.manifest_md5"]) == 32
    assert run.data.tags["git_commit"] == "unknown"  # the cwd is a temp dir outside git
    history = mlflow.tracking.MlflowClient().get_metric_history(run_id, "train_loss")
    assert [m.step for m in history] == [1, 2]


@pytest.mark.parametrize("every, logged", [("train.system_metrics_s=0.2", True), ("train.system_metrics_s=0", False)])
def test_a_training_run_carries_the_machines_system_metrics(training_data, workdir, every, logged):
    """CPU and memory series sampled during the training land on its run (GPU ones too where
    nvidia-ml-py finds a GPU), so a starved device shows in the UI; 0 turns them off. Fifteen
    tiny epochs (~0.5 s) outlast several 0.2 s sampling intervals."""
    train_config(tiny_config(training_data, workdir, every, "train.epochs=15"))
    run_id = (workdir / "model/run_id.txt").read_text().strip()
    system = {key for key in mlflow.get_run(run_id).data.metrics if key.startswith("system/")}
    expected = {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"}
    assert (expected <= system) is logged and bool(system) is logged, system
    if logged:
        history = mlflow.tracking.MlflowClient().get_metric_history(run_id, "system/cpu_utilization_percentage")
        assert history and all(0 <= m.value <= 100 * os.cpu_count() for m in history)


def test_resume_after_an_interruption_ends_with_the_weights_of_a_straight_run(training_data, workdir, monkeypatch):
    straight = tiny_config(training_data, workdir / "straight")
    train_config(straight)

    class Interrupted(Exception):
        pass

    save = Checkpoint.save

    def save_then_die(checkpoint, path):
        save(checkpoint, path)
        raise Interrupted  # killed right after the first epoch's checkpoint

    resumed = tiny_config(training_data, workdir / "resumed")
    monkeypatch.setattr(Checkpoint, "save", save_then_die)
    with pytest.raises(Interrupted):
        train_config(resumed)
    monkeypatch.setattr(Checkpoint, "save", save)
    first_run_id = (workdir / "resumed/model/run_id.txt").read_text()
    assert Checkpoint.load(workdir / "resumed/model/last.pt").epoch == 1

    resumed.train.resume = True
    train_config(resumed)

    a = Checkpoint.load(workdir / "straight/model/last.pt")
    b = Checkpoint.load(workdir / "resumed/model/last.pt")
    assert state_dicts_equal(a.weights, b.weights)
    momentum_a = [s["momentum_buffer"] for s in a.optimizer["state"].values()]
    momentum_b = [s["momentum_buffer"] for s in b.optimizer["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(momentum_a, momentum_b, strict=True))
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    assert (workdir / "resumed/model/run_id.txt").read_text() == first_run_id
    # killed between the checkpoint and the metrics: every epoch is logged exactly once
    logged = mlflow.MlflowClient().get_metric_history(first_run_id.strip(), "train_loss")
    assert sorted(m.step for m in logged) == [1, 2]
    assert [m.value for m in sorted(logged, key=lambda m: m.step)] == [r["train_loss"] for r in a.history]


def interrupted_after_first_epoch(training_data, out: Path, monkeypatch) -> DictConfig:
    """Train 1 of 2 epochs, then die (as kill -9 would) with the MLflow run left RUNNING."""
    cfg = tiny_config(training_data, out)
    save = Checkpoint.save

    def save_then_die(checkpoint, path):
        save(checkpoint, path)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Checkpoint, "save", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            train_config(cfg)
    run_id = (out / "model/run_id.txt").read_text().strip()
    mlflow.MlflowClient().update_run(run_id, status="RUNNING")  # a killed process marks nothing
    return cfg


def test_an_unfinished_training_is_refused_by_evaluate_and_register_unless_overridden(
    training_data, workdir, monkeypatch, capsys
):
    from pipeline.evaluate import main as evaluate_main
    from pipeline.register import main as register_main

    out = workdir / "killed"
    interrupted_after_first_epoch(training_data, out, monkeypatch)
    capsys.readouterr()
    overrides = tiny_overrides(training_data, out)
    for stage, key in ((evaluate_main, "eval.allow_unfinished"), (register_main, "register.allow_unfinished")):
        assert stage(overrides) == 2
        err = capsys.readouterr().err
        assert err == (
            f"error: {out}/model/last.pt is epoch 1 of 2: its training did not finish; resume it "
            f"(train.resume=true) or set {key}=true to use it anyway\n"
        )
    assert evaluate_main([*overrides, "eval.allow_unfinished=true"]) == 0
    run_id = (out / "model/run_id.txt").read_text().strip()
    assert mlflow.MlflowClient().get_run(run_id).data.tags["evaluated_unfinished"].startswith("true")
    assert register_main([*overrides, "register.allow_unfinished=true", "register.model_name=unfinished"]) == 0
    version = mlflow.MlflowClient().get_model_version("unfinished", "1")
    assert version.tags["unfinished"] == "epoch 1 of 2"


def test_a_new_training_marks_the_killed_run_in_its_place_killed(training_data, workdir, monkeypatch):
    out = workdir / "killed"
    interrupted_after_first_epoch(training_data, out, monkeypatch)
    killed_run = (out / "model/run_id.txt").read_text().strip()
    train_config(tiny_config(training_data, out))
    run = mlflow.MlflowClient().get_run(killed_run)
    assert run.info.status == "KILLED" and "a2nets.abandoned" in run.data.tags
    assert (out / "model/run_id.txt").read_text().strip() != killed_run


def sync_bn_worker(rank: int, port: int, batch: torch.Tensor, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    bn = SyncBatchNorm(3)
    half = batch[rank * 2 : rank * 2 + 2].clone().requires_grad_(True)
    (bn(half) * torch.arange(1.0, 3.0)[:, None, None, None, None]).sum().backward()
    torch.save(
        {"out_grad": half.grad, "running_var": bn.running_var, "weight_grad": bn.weight.grad}, f"{out}/{rank}.pt"
    )
    dist.destroy_process_group()


def test_sync_batchnorm_on_two_cpu_processes_equals_batchnorm_on_the_whole_batch(tmp_path):
    batch = torch.randn(4, 3, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    mp.spawn(sync_bn_worker, args=(free_port(), batch, str(tmp_path)), nprocs=2)
    reference = torch.nn.BatchNorm3d(3)
    whole = batch.clone().requires_grad_(True)
    (reference(whole) * torch.tensor([1.0, 2.0, 1.0, 2.0])[:, None, None, None, None]).sum().backward()
    parts = [torch.load(tmp_path / f"{rank}.pt") for rank in (0, 1)]
    assert torch.allclose(torch.cat([p["out_grad"] for p in parts]), whole.grad, atol=1e-5)
    assert torch.allclose(parts[0]["running_var"], reference.running_var, atol=1e-6)
    # DDP averages parameter gradients over processes; their mean is the whole batch's gradient / 2
    assert torch.allclose(parts[0]["weight_grad"] + parts[1]["weight_grad"], reference.weight.grad, atol=1e-5)


def test_lr_warms_up_linearly_then_decays_along_a_cosine_to_zero_and_stays_there():
    factors = [WarmupCosine(0.1, 4, 12).lr(step) / 0.1 for step in range(16)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0], rel=1e-12)
    assert factors[4] == pytest.approx(1.0, rel=1e-12) and factors[8] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(factors[4:12], factors[5:13]))
    assert factors[12:] == [0.0] * 4  # past the end: 0, never a second period of the cosine


def closed_form_lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """The curve the paper's recipe names: linear warm-up over ``warmup_steps``, then half a cosine."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@pytest.mark.parametrize(
    "warmup_epochs, epochs, steps_per_epoch, warmup_steps",
    [(1, 3, 4, 4), (0, 10, 1, 0), (0.5, 7, 3, 2), (2, 5, 60, 120)],
)
def test_the_schedule_of_the_train_settings(warmup_epochs, epochs, steps_per_epoch, warmup_steps):
    schedule = WarmupCosine.of_epochs(0.2, warmup_epochs, epochs, steps_per_epoch)
    assert (schedule.warmup_steps, schedule.total_steps) == (warmup_steps, epochs * steps_per_epoch)
    total = epochs * steps_per_epoch
    expected = [0.2 * closed_form_lr_factor(s, warmup_steps, total) for s in range(total + 1)]
    assert [schedule.lr(s) for s in range(total + 1)] == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_a_resume_with_more_epochs_follows_the_new_config_schedule(training_data, workdir, capsys):
    """1 epoch, then resumed with train.epochs=3: epochs 2 and 3 take the 3-epoch curve (not the
    1-epoch cosine's second period), as a straight 3-epoch run does; the change is said in one line."""
    metrics = {name: workdir / name / "metrics.csv" for name in ("straight", "extended")}
    straight = ("train.epochs=3", "train.warmup_epochs=0", f"train.metrics_csv={metrics['straight']}")
    train_config(tiny_config(training_data, workdir / "straight", *straight))
    extended = (f"train.metrics_csv={metrics['extended']}", "train.warmup_epochs=0")
    train_config(tiny_config(training_data, workdir / "extended", "train.epochs=1", *extended))
    capsys.readouterr()
    train_config(tiny_config(training_data, workdir / "extended", "train.epochs=3", "train.resume=true", *extended))
    assert "note: resuming after epoch 1 with train.epochs 1 → 3: the learning rate follows" in capsys.readouterr().out

    def lrs(path: Path) -> list[float]:
        with open(path, newline="") as f:
            return [float(row["lr"]) for row in csv.DictReader(f)]

    assert lrs(metrics["extended"])[1:] == lrs(metrics["straight"])[1:]
    assert lrs(metrics["extended"])[1] > 0 and lrs(metrics["extended"])[2] == 0.0
    assert Checkpoint.load(workdir / "extended/model/last.pt").epoch == 3


def test_the_training_follows_its_schedule_settings(training_data, workdir):
    """What train() gives the schedule: train.lr, train.epochs × steps per epoch with
    train.warmup_epochs × steps per epoch of warm-up, validation every train.val_every epochs and
    the last, all in the CSV that train.metrics_csv names."""
    metrics_csv = workdir / "schedule" / "metrics.csv"
    train_config(
        tiny_config(
            training_data,
            workdir,
            "train.warmup_epochs=0.5",
            "train.epochs=3",
            "train.lr=0.2",
            "train.val_every=2",
            f"train.metrics_csv={metrics_csv}",
        )
    )
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    logged = [float(row["lr"]) for row in rows]  # the lr of the next step, per epoch
    manifest = read_manifest(training_data[1]).values()
    steps_per_epoch = sum(r["split"] == "train" and r["status"] == "ok" for r in manifest) // 4  # batch 4
    warmup, total = round(0.5 * steps_per_epoch), 3 * steps_per_epoch
    expected = [0.2 * closed_form_lr_factor(e * steps_per_epoch, warmup, total) for e in (1, 2, 3)]
    assert logged == pytest.approx(expected, rel=1e-5, abs=1e-9)  # the CSV keeps 6 significant digits
    assert [row["val_clip_top1"] != "" for row in rows] == [False, True, True]  # epoch 2, then the last
    assert not (workdir / "train_metrics.csv").exists()  # tiny_overrides' path, overridden


def test_train_transform_mirrors_about_half_the_items_left_to_right():
    views = torch.randint(0, 256, (1, 4, 3, 40, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    plain, mirroring = TrainTransform(32, (1.0, 1.3), hflip=False), TrainTransform(32, (1.0, 1.3), hflip=True)
    mirrored = 0
    for seed in range(40):
        a = plain(views, torch.Generator().manual_seed(seed))
        b = mirroring(views, torch.Generator().manual_seed(seed))
        if not torch.equal(a, b):
            assert torch.equal(b, a.flip(-1)), seed  # the same crop, mirrored along its width
            mirrored += 1
    assert 10 <= mirrored <= 30


def test_data_hflip_reaches_the_training_clips(training_data, tmp_path):
    def clips(hflip: bool) -> list[torch.Tensor]:
        dataset = config_loaders(
            tiny_config(training_data, tmp_path, f"data.hflip={hflip}"), DistInfo(), torch.device("cpu")
        ).dataset
        return [dataset[i]["frames"] for i in range(len(dataset))]

    pairs = list(zip(clips(False), clips(True), strict=True))
    assert any(not torch.equal(plain, maybe) for plain, maybe in pairs)
    assert all(torch.equal(maybe, plain) or torch.equal(maybe, plain.flip(-1)) for plain, maybe in pairs)


def test_weight_decay_skips_norm_parameters_and_biases():
    net = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 1), torch.nn.BatchNorm3d(4), torch.nn.Linear(4, 2))
    decay, no_decay = parameter_groups(net, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(net[0].weight), id(net[2].weight)}
    assert len(no_decay["params"]) == 4  # conv bias, BN weight and bias, linear bias


def test_train_transform_is_a_function_of_the_generator_and_keeps_the_geometry_of_a_crop():
    frames = torch.randint(0, 256, (1, 4, 3, 40, 60), dtype=torch.uint8)
    transform = TrainTransform(32, scale_jitter=(1.0, 1.3), hflip=True)
    a = transform(frames, torch.Generator().manual_seed(5))
    b = transform(frames, torch.Generator().manual_seed(5))
    assert a.shape == (1, 3, 4, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    no_jitter = TrainTransform(40, scale_jitter=(1.0, 1.0))(frames, torch.Generator().manual_seed(0))
    windows = [frames[0, :, :, :, x : x + 40].permute(1, 0, 2, 3) for x in range(21)]
    assert any(torch.equal(no_jitter[0], w) for w in windows)  # an exact crop, no resampling


def test_train_crop_stays_within_max_shift_of_the_centre():
    width = 100  # a 32 crop may start at 0..68; centred at 34; shift 0.25 × 32 = 8 → 26..42
    columns = torch.arange(width, dtype=torch.uint8).expand(1, 1, 3, 40, width)
    transform = TrainTransform(32, scale_jitter=(1.25, 1.25), max_shift=0.25)  # short side stays 40
    starts = {int(transform(columns, torch.Generator().manual_seed(s))[0, 0, 0, 0, 0]) for s in range(200)}
    assert min(starts) == 26 and max(starts) == 42


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.net.name=tiny_bogus", "unknown video model 'tiny_bogus'"),
        ("data.shards_dir=/nonexistent/shards", "shards dir /nonexistent/shards not found"),
        ("data.train_split=test", "no test-NNNNNN.tar shards"),
        ("train.batch_size=64", "fewer than train.batch_size=64"),
        ("train.device=cuda", "train.device=cuda but no CUDA device is visible"),
    ],
)
def test_bad_configs_fail_with_one_clear_line(training_data, workdir, capsys, monkeypatch, override, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine with a GPU
    argv = tiny_overrides(training_data, workdir, override)
    assert train_stage.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


# ------------------------------------------------- the train settings reach what the training does


def test_two_sgd_steps_are_the_closed_form_of_momentum_weight_decay_and_clipping(training_data, workdir, monkeypatch):
    """Two steps (8 clips, batch 4) of SGD on gradients clipped to a total norm of
    train.grad_clip, with train.weight_decay on the weights (not norms and biases) and
    train.momentum: from the weights as built, the weights and momentum buffers after the second
    step and the two learning rates, the clipped gradients of both steps are recovered by
    inverting the update; each has the norm train.grad_clip exactly."""
    lr, momentum, weight_decay, clip = 0.1, 0.5, 0.05, 0.02
    nets = record_built_nets(monkeypatch)
    cfg = tiny_config(
        training_data,
        workdir,
        "train.epochs=1",
        "train.val_every=0",
        "train.warmup_epochs=0",
        f"train.lr={lr}",
        "train.momentum=0.5",
        "train.weight_decay=0.05",
        "train.grad_clip=0.02",
    )
    checkpoint = Checkpoint.load(train_config(cfg))
    [built] = nets
    groups = checkpoint.optimizer["param_groups"]
    assert [(g["momentum"], g["weight_decay"]) for g in groups] == [(momentum, weight_decay), (momentum, 0.0)]

    named = dict(built.net.named_parameters())
    order = [n for n, p in named.items() if p.ndim > 1] + [n for n, p in named.items() if p.ndim <= 1]  # the groups
    lr0, lr1 = (lr * closed_form_lr_factor(step, 0, 2) for step in (0, 1))
    first, second = [], []
    for index, name in enumerate(order):
        decay = weight_decay if named[name].ndim > 1 else 0.0
        w0, w2 = built.initial[name].double(), checkpoint.weights[name].double()
        b2 = checkpoint.optimizer["state"][index]["momentum_buffer"].double()
        w1 = w2 + lr1 * b2  # w2 = w1 - lr1 * b2
        b1 = (w0 - w1) / lr0  # the first buffer is the first step's decayed gradient
        first.append(b1 - decay * w0)
        second.append(b2 - momentum * b1 - decay * w1)  # b2 = momentum * b1 + (g2 + decay * w1)
    norms = [float(torch.cat([g.flatten() for g in grads]).norm()) for grads in (first, second)]
    assert norms == pytest.approx([clip, clip], rel=1e-4)


def test_the_training_loss_is_the_label_smoothed_cross_entropy(training_data, workdir, monkeypatch):
    """The logged train_loss of an epoch is the mean, over its clips, of the cross-entropy with
    train.label_smoothing of the logits the network gave (recorded on their way to the loss)."""
    smoothing = 0.4
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    cross_entropy = torch.nn.functional.cross_entropy

    def recording(logits, labels, **kwargs):
        seen.append((logits.detach().double(), labels.clone()))
        return cross_entropy(logits, labels, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", recording)
    cfg = tiny_config(training_data, workdir, "train.epochs=1", "train.val_every=0", "train.label_smoothing=0.4")
    logged = Checkpoint.load(train_config(cfg)).history[0]["train_loss"]

    logits, labels = torch.cat([x for x, _ in seen]), torch.cat([y for _, y in seen])
    log_p = logits.log_softmax(1)
    plain = -log_p.gather(1, labels[:, None])[:, 0]
    smoothed = (1 - smoothing) * plain - smoothing * log_p.mean(1)
    assert len(labels) == 8 and logged == pytest.approx(float(smoothed.mean()), rel=1e-5)
    assert abs(float(plain.mean()) - logged) > 1e-3  # not the plain cross-entropy


def test_training_clips_are_the_configured_window_of_the_configured_frames(training_data, tmp_path):
    """Each training clip (data.hflip off) is model.clip.num_frames frames model.clip.stride
    apart (from a start the item draws), of the video with its short side scaled to
    model.clip.crop_size × train.scale_jitter, cropped to crop_size² at the centre
    (train.max_crop_shift=0)."""
    num_frames, stride, crop, short_side = 3, 2, 24, 36  # 24 × 1.5
    cfg = tiny_config(
        training_data,
        tmp_path,
        "model.clip.num_frames=3",
        "model.clip.stride=2",
        "model.clip.crop_size=24",
        "train.scale_jitter=[1.5,1.5]",
        "train.max_crop_shift=0",
        "data.hflip=false",
    )
    dataset = config_loaders(cfg, DistInfo(), torch.device("cpu")).dataset
    whole = ClipDataset(training_data[1], "train", lambda n, generator: [list(range(n))])  # every frame
    for index in range(len(dataset)):
        clip = dataset[index]["frames"][0]  # (C, T, S, S)
        assert clip.shape == (3, num_frames, crop, crop)
        frames = resize_short_side(whole[index]["frames"][0], short_side)  # (T, C, H, W)
        top, left = ((side - crop) // 2 for side in frames.shape[-2:])
        window = frames[..., top : top + crop, left : left + crop].permute(1, 0, 2, 3)  # (C, T, S, S)
        n = window.shape[1]
        starts = range(max(n - (num_frames - 1) * stride - 1, 0) + 1)
        candidates = [[min(s + k * stride, n - 1) for k in range(num_frames)] for s in starts]  # short: repeat
        assert any(torch.equal(clip, window[:, indices]) for indices in candidates), dataset.keys[index]


def test_train_seed_picks_the_order_and_the_augmentation_of_the_clips(training_data, tmp_path):
    """The same train.seed gives the same epoch (sampler order, sampled clips), another seed another one."""

    def epoch(*overrides: str) -> tuple[list[int], list[torch.Tensor]]:
        data = config_loaders(tiny_config(training_data, tmp_path, *overrides), DistInfo(), torch.device("cpu"))
        return list(data.sampler), [data.dataset[i]["frames"] for i in range(len(data.dataset))]

    (order, clips), (same_order, same_clips) = epoch("train.seed=7"), epoch("train.seed=7")
    default_order, default_clips = epoch()
    assert order == same_order and all(map(torch.equal, clips, same_clips))
    assert order != default_order and not all(map(torch.equal, clips, default_clips))


def test_the_loaders_read_with_train_num_workers_worker_processes(training_data, tmp_path):
    """train.num_workers DataLoader workers load the training and the per-epoch validation clips."""
    data = config_loaders(tiny_config(training_data, tmp_path, "train.num_workers=2"), DistInfo(), torch.device("cpu"))
    assert data.loader.num_workers == 2 and data.val_loader.num_workers == 2


def test_clips_are_normalised_with_data_mean_and_std(training_data, tmp_path):
    """What the network sees: per channel (x / 255 - data.mean) / data.std."""
    mean, std = torch.tensor([0.2, 0.4, 0.6]), torch.tensor([0.5, 0.25, 0.125])
    cfg = tiny_config(training_data, tmp_path, "data.mean=[0.2,0.4,0.6]", "data.std=[0.5,0.25,0.125]")
    frames = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3, 1, 1).expand(1, 1, 3, 3, 2, 2)
    clips = config_model_input(cfg)(frames, torch.device("cpu"))  # (N·V, C, T, H, W)
    expected = (torch.tensor([0, 51, 255]) / 255.0)[None, :] - mean[:, None]  # (C, T)
    expected = expected / std[:, None]
    assert torch.allclose(clips[0, :, :, 0, 0], expected, atol=1e-6)
