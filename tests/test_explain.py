"""``a2net explain``: the gather maps of a registered A² model on a video, as a PNG and arrays."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

import a2model
from pipeline.cli import main
from pipeline.registry.publish import Lineage, log_and_register

from mlflow_server import CLASSES, GOOD_METRICS, PREPROCESSING


@pytest.fixture(scope="module")
def registered(stand_in_store: dict) -> dict[str, str]:
    """models:/ URIs of an untrained tiny_a2 and tiny_plain registered in the stand-in store."""
    uris = {}
    for name in ("tiny_a2", "tiny_plain"):
        with mlflow.start_run() as run:
            mlflow.log_metrics(GOOD_METRICS)
        net = a2model.build_model(name, num_classes=len(CLASSES))
        uris[name] = log_and_register(
            net.eval(),
            run_id=run.info.run_id,
            model_name=f"explain-{name}",
            architecture=name,
            classes=CLASSES,
            preprocessing=PREPROCESSING,
            lineage=Lineage("c0ffee", "p", "s", validation="passed"),
            net_config={"_target_": "a2model.build_model", "name": name},
        ).model_uri
    return uris


def test_explain_writes_the_figure_and_normalised_maps(registered, noise_video, tmp_path, capsys) -> None:
    out = tmp_path / "explain"
    assert main(["explain", str(noise_video), "--model", registered["tiny_a2"], "--out", str(out)]) == 0
    assert f"wrote {out / 'attention.png'} and {out / 'attention.npz'}" in capsys.readouterr().out
    arrays = np.load(out / "attention.npz")
    [block] = arrays["blocks"].tolist()  # tiny_a2: one A² block
    gather, distribution = arrays[f"gather_maps/{block}"], arrays[f"distribution/{block}"]
    assert gather.ndim == 4 and gather.shape == distribution.shape  # (n, T', H', W')
    np.testing.assert_allclose(gather.reshape(len(gather), -1).sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(distribution.sum(0), 1, rtol=1e-5)
    frames = arrays["frames"]
    assert frames.shape == (PREPROCESSING.num_frames, PREPROCESSING.crop_size, PREPROCESSING.crop_size, 3)
    assert frames.dtype == np.uint8 and frames.std() > 10  # the video's noise, not a blank
    with Image.open(out / "attention.png") as figure:
        assert figure.format == "PNG" and figure.width > 4 * figure.height / 5  # 1 + 4 rows of T frames
    assert not list(out.glob("*.tmp"))


@pytest.mark.parametrize(
    "model, says",
    [
        ("tiny_plain", "has no double attention (A²) block; choose an A² model"),
        ("stand-in", "unknown video model 'stand_in'"),
    ],
)
def test_a_model_without_a2_blocks_is_one_line(registered, noise_video, tmp_path, model, says, capsys) -> None:
    uri = registered.get(model, "models:/a2net@staging")
    assert main(["explain", str(noise_video), "--model", uri, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())


def test_a_missing_video_is_one_line(registered, tmp_path, capsys) -> None:
    missing = tmp_path / "missing.mp4"
    assert main(["explain", str(missing), "--model", registered["tiny_a2"], "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"error: {missing}: no such file; give a video file\n"


@pytest.mark.parametrize(
    "make_out, says",
    [
        (lambda d: (d / "file.png").write_bytes(b"x") and d / "file.png", "is a file, not a folder"),
        (lambda d: (d / "file").write_bytes(b"x") and d / "file/sub", "is a file, not a folder"),
        (lambda d: Path("/sys/a2net-out"), "Operation not permitted; give a folder you can write"),  # even for root
    ],
)
def test_an_unusable_out_is_one_line_before_the_inference(registered, noise_video, tmp_path, capsys, monkeypatch,
                                                            make_out, says) -> None:  # fmt: skip
    import pipeline.registry.explain as explain

    folder = tmp_path / "outs"
    folder.mkdir()
    out = make_out(folder)
    monkeypatch.setattr(explain, "eager_net", lambda model: pytest.fail("the inference ran first"))
    assert main(["explain", str(noise_video), "--model", registered["tiny_a2"], "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out}") and says in err and err.count("\n") == 1, err


def test_the_figure_draws_each_blocks_top_maps(registered, noise_video) -> None:
    from pipeline.evaluation.attention import map_shares, top_maps, view_attention
    from pipeline.registry.explain import eager_net
    from pipeline.registry.predict import load_model
    from pipeline.serving.views import video_frames

    model = load_model(registered["tiny_a2"])
    view = video_frames(Path(noise_video), model.preprocessing)[0]
    [maps] = view_attention(eager_net(model), view, PREPROCESSING.mean, PREPROCESSING.std).maps
    shares = map_shares(maps)
    assert float(shares.sum()) == pytest.approx(1, abs=1e-5)
    top = top_maps(maps, 4)
    assert [i for i, _ in top] == shares.argsort(descending=True)[:4].tolist()
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)


def test_the_figure_has_a_colour_scale_and_exact_shares(tmp_path, monkeypatch) -> None:
    """A newcomer can read it: a colour bar says what the heat means, shares keep one decimal."""
    import torch
    from matplotlib.figure import Figure

    from pipeline.evaluation.attention import plot_attention, top_maps, view_attention

    figures = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, path, **_: (figures.append(figure), Path(path).touch()))
    torch.manual_seed(0)
    net = a2model.build_model("tiny_a2", num_classes=4).eval()
    view = torch.randint(0, 256, (3, 8, 56, 56), dtype=torch.uint8)
    attention = view_attention(net, view, [0.45] * 3, [0.225] * 3)
    plot_attention(attention, tmp_path / "a.png", "title")
    [figure] = figures
    labels = [ax.get_ylabel() for ax in figure.axes if ax.get_ylabel()]
    rows = [f"stages.1.1\nmap {i} · share {s:.1%}" for i, s in top_maps(attention.maps[0])]
    assert labels == ["frames", *rows, "gather weight / the map's largest"]
    [bar] = [ax for ax in figure.axes if ax.get_ylabel() == "gather weight / the map's largest"]
    assert bar.get_ylim() == (0.0, 1.0)
