"""``a2net predict`` and ``a2net explain``: a registered model's top-k labels, and its attention maps, on videos."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from pipeline.cli.common import EXIT_BAD_INPUT, SAME_MODEL_HELP, add_command, client, model_uri, positive_int

PREDICT_DESCRIPTION = """\
Print the top-k labels of each video with a registered model. Each video is
preprocessed as the evaluate stage does, with the parameters stored on the
model (fps, short side, JPEG round trip, clips x crops). The first line names
the version an alias URI resolved to ("models:/a2net@staging is version 3");
with --json it is the "version" field. A model is data: no pickle, no code."""

PREDICT_EPILOG = """\
examples:
  a2net predict video1.mp4 video2.webm         # models:/a2net@staging
  a2net predict clip.mp4 --model models:/a2net@production --json
  a2net predict clip.mp4 --model models:/a2net/3 --top-k 3

exit codes:
  0  every video predicted
  2  a video is missing or not a video (one line each on stderr; the others
     are still predicted), or the model cannot be loaded"""

EXPLAIN_DESCRIPTION = """\
Show what the double attention (A²) blocks of a registered model look at in a
video. The video is preprocessed as predict does; on its central view (middle
clip, centre crop) every A² block's gather maps (the softmax attention with
which it pools its global features) are ranked by share, the mean weight the
positions' distribution gives them (a block's shares sum to 1). Writes
  OUT/attention.png  the view's frames, then per block its 4 most used gather
                     maps as heat maps over the frames (block, map, share)
  OUT/attention.npz  per block gather_maps/<block> and distribution/<block>,
                     each (n, T', H', W'): every gather map sums to 1 over its
                     T'*H'*W' positions, the distribution sums to 1 over the n
                     maps at each position; frames (T, S, S, 3) and blocks
The net is rebuilt by name from the model's metadata and loaded with its pt2
weights: no pickle, no code from the model."""

EXPLAIN_EPILOG = """\
examples:
  a2net explain clip.mp4 --out explain/                  # models:/a2net@staging
  a2net explain clip.mp4 --model models:/a2net/3 --out explain/v3

exit codes:
  0  the figure and arrays were written
  2  the video is missing or not a video, the model cannot be loaded, or it
     has no A² block (a plain or non-local net)"""


def cmd_predict(args: argparse.Namespace) -> int:
    """``a2net predict``: top-k labels for each video; a bad video is reported, the rest run."""
    from pipeline.registry.predict import format_prediction, format_source, load_model, predict
    from pipeline.serving.views import VideoError

    client()
    model = load_model(model_uri(args))
    source = format_source(model)
    if source and not args.json:
        print(source, flush=True)
    results, failed = [], False
    for video in args.videos:
        try:
            results += predict(model, [Path(video)], top_k=args.top_k)
        except VideoError as err:
            print(f"error: {err}", file=sys.stderr)
            failed = True
            continue
        if not args.json:
            print(format_prediction(results[-1]))
    if args.json:
        predictions = [asdict(r) for r in results]
        print(json.dumps({"model": model.uri, "version": model.version, "predictions": predictions}, indent=2))
    return EXIT_BAD_INPUT if failed else 0


def cmd_explain(args: argparse.Namespace) -> int:
    """``a2net explain``: the A² blocks' gather maps on a video, as attention.png and attention.npz."""
    from pipeline.registry.explain import explain_video
    from pipeline.registry.predict import format_source, load_model

    client()
    model = load_model(model_uri(args))
    source = format_source(model)
    if source:
        print(source)
    explained = explain_video(model, Path(args.video), Path(args.out))
    print(f"{args.video}: {explained.label} ({explained.probability:.1%}) on the central view")
    print(f"wrote {explained.figure} and {explained.arrays}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``predict`` and ``explain`` sub-commands and their options."""
    summary = "top-5 labels of videos with a registered model"
    p = add_command(sub, "predict", summary, PREDICT_DESCRIPTION, PREDICT_EPILOG, cmd_predict)
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (any format ffmpeg reads)")
    p.add_argument(
        "--model",
        metavar="URI",
        help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<run>/<path> or a local model "
        "folder (default: models:/<register.model_name>@staging)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--top-k", type=positive_int, default=5, metavar="K", help="labels per video (default: 5)")

    summary = "attention maps of a registered A² model on a video (PNG and NPZ)"
    p = add_command(sub, "explain", summary, EXPLAIN_DESCRIPTION, EXPLAIN_EPILOG, cmd_explain)
    p.add_argument("video", metavar="VIDEO", help="a video file (any format ffmpeg reads)")
    p.add_argument("--model", metavar="URI", help=SAME_MODEL_HELP)
    p.add_argument("--out", metavar="DIR", required=True, help="folder for attention.png and attention.npz")
