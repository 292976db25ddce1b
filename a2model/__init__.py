"""a2model: double attention networks (A²-Nets) in pure PyTorch — blocks, backbones, factories."""

from a2model.attention import DoubleAttention, NonLocal, double_attention
from a2model.factory import MODEL_INPUTS, MODELS, build_model, count_macs, count_params
from a2model.inflate import InflationReport, inflate_from_2d, load_matching
from a2model.video_resnet import VideoResNet, VideoResNetSpec

__all__ = [
    "DoubleAttention",
    "InflationReport",
    "MODELS",
    "MODEL_INPUTS",
    "NonLocal",
    "VideoResNet",
    "VideoResNetSpec",
    "build_model",
    "count_macs",
    "count_params",
    "double_attention",
    "inflate_from_2d",
    "load_matching",
]
