"""Decoding training clips on the device (train.decode_on=device): the code a GPU runs, run on the CPU,
against the CPU path (train.decode_on=workers) it must match crop for crop and flip for flip."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torchvision.transforms.v2 import functional as F

import pipeline.train as train_stage
from pipeline.core.errors import StageError
from pipeline.data.device_decode import DeviceDecoded, EncodedClips, collate_encoded, decode_batch
from pipeline.data.transforms import TrainTransform, resized_shape
from pipeline.runtime.checkpoint import Checkpoint
from pipeline.training.distributed import DistInfo

from helpers import config_loaders, tiny_config, tiny_overrides

CPU = torch.device("cpu")
# wide jitter, crops anywhere, flips: every part of the draw is exercised
GEOMETRY = ("model.clip.crop_size=24", "train.scale_jitter=[1.0,1.6]", "train.max_crop_shift=null", "data.hflip=true")


@pytest.mark.parametrize(
    "height, width, short",
    [(32, 40, 36), (40, 32, 36), (240, 320, 256), (256, 340, 292), (33, 57, 41), (100, 100, 64), (3, 1000, 7)],
)
def test_resized_shape_is_the_shape_resize_makes(height: int, width: int, short: int) -> None:
    """The worker draws the crop for the resized size without resizing: it must be the real one."""
    resized = F.resize(torch.zeros(3, height, width, dtype=torch.uint8), [short], antialias=True)
    assert resized_shape(height, width, short) == tuple(resized.shape[-2:])


def epoch_batches(training_data, tmp_path, decode_on: str, workers: int, epoch: int) -> list[dict]:
    cfg = tiny_config(
        training_data, tmp_path, *GEOMETRY, f"train.decode_on={decode_on}", f"train.num_workers={workers}"
    )
    data = config_loaders(cfg, DistInfo(), CPU)
    data.set_epoch(epoch)
    return list(data.loader)


@pytest.mark.parametrize("workers", [0, 1])
def test_the_device_path_gives_the_cpu_paths_batches(training_data, tmp_path, workers: int) -> None:
    """Same clips, crops, flips and pixels (one decoder on the CPU) in the same order, epoch after epoch,
    whatever the number of workers."""
    for epoch in range(3):
        on_cpu = epoch_batches(training_data, tmp_path, "workers", 0, epoch)
        on_device = epoch_batches(training_data, tmp_path, "device", workers, epoch)
        assert len(on_cpu) == len(on_device) == 2
        for expected, got in zip(on_cpu, on_device, strict=True):
            assert got["frames"].dtype == torch.uint8 and got["frames"].shape == (4, 1, 3, 4, 24, 24)
            assert torch.equal(got["frames"], expected["frames"])
            assert torch.equal(got["label"], expected["label"]) and list(got["key"]) == list(expected["key"])
    transform = TrainTransform(24, (1.0, 1.6), hflip=True)
    plans = [transform.plan(32, 40, torch.Generator().manual_seed(seed)) for seed in range(40)]
    flipped, resized = sum(p.flip for p in plans), sum(p.short != 32 for p in plans)
    assert 10 <= flipped <= 30 and resized > 30  # the geometry above flips about half, resizes most


def test_a_training_decoding_on_the_device_ends_with_the_weights_of_the_cpu_path(training_data, workdir) -> None:
    """The hand-over: one epoch of tiny_a2 through either path, the same SGD steps."""
    weights = {}
    for decode_on in ("workers", "device"):
        out = workdir / decode_on
        argv = tiny_overrides(training_data, out, *GEOMETRY, "train.epochs=1", "train.val_every=0",
                              f"train.decode_on={decode_on}", "train.system_metrics_s=0")  # fmt: skip
        assert train_stage.main(argv) == 0
        weights[decode_on] = Checkpoint.load(out / "model" / "last.pt").weights
    assert weights["workers"].keys() == weights["device"].keys()
    assert all(torch.equal(weights["workers"][k], weights["device"][k]) for k in weights["workers"])


def test_frames_other_than_the_shard_record_says_are_one_line(training_data, tmp_path) -> None:
    cfg = tiny_config(training_data, tmp_path, *GEOMETRY, "train.decode_on=device")
    encoded = EncodedClips(config_loaders(cfg, DistInfo(), CPU).dataset)
    item = encoded[0]
    lying = replace(item, layout=replace(item.layout, size=(48, 64)))
    with pytest.raises(StageError, match=rf"clip {item.layout.key}: frames are 32x\d+, its shard record says 48x64"):
        decode_batch(collate_encoded([encoded[1], lying]), encoded.transform, CPU)


def test_a_batch_carries_each_jpeg_once_in_one_buffer(training_data, tmp_path) -> None:
    """What a worker sends back: the bytes of the sampled frames, no decoded pixels."""
    cfg = tiny_config(training_data, tmp_path, *GEOMETRY, "train.decode_on=device")
    encoded = EncodedClips(config_loaders(cfg, DistInfo(), CPU).dataset)
    items = [encoded[i] for i in range(3)]
    batch = collate_encoded(items)
    assert batch.data.dtype == torch.uint8 and batch.data.dim() == 1
    assert bytes(batch.data.numpy()) == b"".join(jpeg for item in items for jpeg in item.jpegs)
    assert batch.sizes == [len(jpeg) for item in items for jpeg in item.jpegs]
    assert all(layout.count == len(set(layout.order)) <= 4 for layout in batch.layouts)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory and nvJPEG need a CUDA device")
def test_on_cuda_batches_are_pinned_and_decoded_within_decoder_tolerance(training_data, tmp_path) -> None:
    cuda = torch.device("cuda")
    cfg = tiny_config(training_data, tmp_path, *GEOMETRY, "train.decode_on=device", "train.num_workers=1")
    data = config_loaders(cfg, DistInfo(), cuda)
    assert isinstance(data.loader, DeviceDecoded) and data.loader.loader.pin_memory
    reference = epoch_batches(training_data, tmp_path, "workers", 0, 0)
    for expected, got in zip(reference, data.loader, strict=True):
        assert got["frames"].device.type == "cuda"
        difference = (got["frames"].cpu().int() - expected["frames"].int()).abs().float()
        assert difference.mean() < 2 and difference.max() <= 32  # nvJPEG's IDCT/upsampling against libjpeg-turbo
