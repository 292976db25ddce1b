"""Shards streamed from an S3 store (moto's server over HTTP on loopback) give what the local folder
gives: the same index, frames, digests and training loss; a store that restarts mid-read is
survived; a wrong bucket, no credentials or a store that is gone is one line naming the URL."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.core.errors import StageError
from pipeline.data import shard_store
from pipeline.data.provenance import data_fingerprint
from pipeline.data.shards import ClipDataset
from pipeline.data.transforms import RandomClip, TrainTransform
from pipeline.evaluation.setting import split_digest

from helpers import tiny_overrides
from s3_server import Relay, S3Server

pytestmark = pytest.mark.scaleout
BUCKET = "a2nets-shards"


@pytest.fixture(scope="module")
def s3(training_data: tuple[Path, Path]):
    """The S3 server with the training data's shards under ``s3://a2nets-shards/synthetic``; the
    module's process talks to it through the environment, as a user's would."""
    server = S3Server().start()
    with pytest.MonkeyPatch.context() as env:
        for name, value in server.env.items():
            env.setenv(name, value)
        server.make_bucket(BUCKET)
        url = server.upload_folder(training_data[1], BUCKET, "synthetic")
        yield server, url
    server.stop()


def items(dataset: ClipDataset, indices: list[int], epoch: int = 0) -> list[dict]:
    dataset.set_epoch(epoch)
    return [dataset[i] for i in indices]


def same_items(left: list[dict], right: list[dict]) -> bool:
    return all(a["key"] == b["key"] and torch.equal(a["frames"], b["frames"]) for a, b in zip(left, right, strict=True))


def clips(where: Path | str, seed: int = 3) -> ClipDataset:
    """Random 4-frame clips of the train split, jittered, cropped and flipped as in training."""
    return ClipDataset(where, "train", RandomClip(4, 2), TrainTransform(32, (1.0, 1.3), True), seed=seed)


def test_the_streamed_index_and_frames_are_the_local_ones(s3, training_data) -> None:
    _, url = s3
    local, remote = (clips(where) for where in (training_data[1], url))
    assert remote.names == local.names and remote.keys == local.keys and remote.labels == local.labels
    assert all(
        (a.offsets == b.offsets).all() and (a.sizes == b.sizes).all() for a, b in zip(local.entries, remote.entries)
    )
    indices = list(range(len(local)))
    assert same_items(items(remote, indices, epoch=1), items(local, indices, epoch=1))


def test_two_loader_workers_read_the_store_each_with_its_own_client(s3, training_data) -> None:
    _, url = s3
    local, remote = (clips(where) for where in (training_data[1], url))

    def batches(dataset: ClipDataset, context: str) -> list[torch.Tensor]:
        loader = DataLoader(dataset, batch_size=4, num_workers=2, multiprocessing_context=context)
        return [batch["frames"] for batch in loader]

    expected = batches(local, "fork")
    for context in ("fork", "spawn"):  # the workers copy the dataset's client, or get it pickled
        assert all(torch.equal(a, b) for a, b in zip(batches(remote, context), expected, strict=True))


def test_digests_and_fingerprints_of_the_copy_are_those_of_the_folder(s3, training_data) -> None:
    _, url = s3
    shards = training_data[1]
    assert split_digest(url, "validate") == split_digest(shards, "validate") != split_digest(url, "train")
    here, there = data_fingerprint(shards), data_fingerprint(url)
    for tag in ("data.manifest_md5", "data.shards_list_md5"):
        assert there[tag] == here[tag] != "missing"


def test_a_one_epoch_training_from_the_store_has_the_local_loss(s3, training_data, workdir: Path) -> None:
    from pipeline.train import main as train_main

    _, url = s3
    losses = {}
    for name, shards in (("local", training_data[1]), ("s3", url)):
        data = (training_data[0], shards)
        assert train_main(tiny_overrides(data, workdir / name, "train.epochs=1", "train.val_every=0")) == 0
        with open(workdir / name / "train_metrics.csv", newline="") as handle:
            losses[name] = [row["train_loss"] for row in csv.DictReader(handle)]
    assert losses["s3"] == losses["local"] and len(losses["local"]) == 1


def test_a_store_that_stops_answering_mid_epoch_is_survived(s3, training_data, monkeypatch) -> None:
    server, url = s3
    relay = Relay(server.port).start()  # the store as its clients reach it
    monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)
    monkeypatch.setattr(shard_store, "RETRY_DELAYS_S", (1.0, 2.0, 4.0, 8.0))
    local, remote = (clips(where, seed=5) for where in (training_data[1], url))
    half = len(local) // 2
    first = items(remote, list(range(half)))
    relay.stop()
    back = threading.Timer(2.0, relay.start)
    back.start()
    try:
        rest = items(remote, list(range(half, len(local))))
    finally:
        back.join()
        relay.stop()
    assert same_items(first + rest, items(local, list(range(len(local)))))


@pytest.mark.parametrize(
    ("where", "env", "says"),
    [
        ("s3://no-such-bucket-a2nets/synthetic", {}, "no-such-bucket-a2nets"),
        (None, {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}, "credentials"),
        (None, {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "check that the store answers"),
    ],
    ids=["wrong-bucket", "no-credentials", "unreachable"],
)
def test_a_bad_store_is_one_line_naming_the_url_and_exit_2(
    s3, training_data, workdir: Path, monkeypatch, capsys, where, env, says
) -> None:
    from pipeline.train import main as train_main

    _, url = s3
    where = where or url
    monkeypatch.setattr(shard_store, "RETRY_DELAYS_S", (0.1,))
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(workdir / "none"))  # no ~/.aws to fall back on
    monkeypatch.setenv("AWS_CONFIG_FILE", str(workdir / "none"))
    assert train_main(tiny_overrides((training_data[0], where), workdir / "out")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert where.removeprefix("s3://").split("/")[0] in err and says in err, err
    assert not (workdir / "out" / "model").exists()


def test_a_password_in_a_url_is_masked() -> None:
    with pytest.raises(StageError) as raised:
        shard_store.RemoteStore("nosuchscheme-a2nets://user:s3cret@host/b").read_bytes("manifest.csv")
    assert "s3cret" not in str(raised.value) and "***" in str(raised.value)


@pytest.mark.parametrize("stage", ["preprocess", "validate"])
def test_the_stages_that_write_or_check_a_folder_refuse_a_url_in_one_line(stage, workdir: Path, capsys) -> None:
    import importlib

    main = importlib.import_module(f"pipeline.{stage}").main
    assert main(["data.shards_dir=s3://user:s3cret@bucket/shards"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the {stage} stage works on a local folder" in err, err
    assert "s3cret" not in err and not any(workdir.iterdir())  # no local "s3:" folder
