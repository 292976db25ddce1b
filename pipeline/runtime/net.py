"""Which network to build: from the project's config, or by name from a checkpoint's values (data
never names a callable)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from pipeline.core.errors import ConfigError, StageError, shown

NET_FACTORY = "a2model.build_model"  # the only callable a checkpoint's model.net may name


def _video_model_name(name: Any) -> str:
    """``name`` when it is one of a2model's video models, else a ConfigError listing them."""
    import a2model

    video_models = sorted(n for n, shape in a2model.MODEL_INPUTS.items() if len(shape) == 4)  # (C, T, H, W)
    if name not in video_models:
        raise ConfigError(f"unknown video model {name!r} (model.net.name); choose one of: {', '.join(video_models)}")
    return str(name)


def build_net(net_values: Mapping[str, Any], num_classes: int) -> nn.Module:
    """The project's own ``model.net`` values (``a2model.build_model``) for ``num_classes``.

    Built by name like a checkpoint's (``net_values``), never by Hydra's ``instantiate``: an
    override of ``_target_`` (``model.net._target_=builtins.print``, or a nested one) names no code.
    """
    values = dict(net_values)
    fix = f"only {NET_FACTORY} builds nets (pipeline/conf/model)"
    return _built(values, num_classes, "the config's model.net", fix, ConfigError)


def net_from_values(net_values: Mapping[str, Any], num_classes: int, source: str) -> nn.Module:
    """The net that a ``model.net`` read from data (a checkpoint) describes, built by name.

    Data never names code: ``_target_`` may only be ``a2model.build_model`` (what the project
    writes) and every other key is a plain keyword value (bool, int, float, str) of that factory,
    so a crafted checkpoint cannot make Hydra instantiate a callable of its choosing.
    """
    fix = f"a checkpoint is data and only builds {NET_FACTORY} by name: retrain with `python -m pipeline.train`"
    return _built(dict(net_values), num_classes, source, fix, StageError)


def _built(values: dict[str, Any], num_classes: int, source: str, fix: str, error: type[StageError]) -> nn.Module:
    """``a2model.build_model(values["name"], num_classes, **plain values)``; ``error`` (one line
    ending with ``fix``) for another ``_target_`` or a value that is not plain."""
    import a2model

    target = values.pop("_target_", NET_FACTORY)
    if target != NET_FACTORY:
        raise error(f"{source}: model.net._target_ is {shown(target)}; {fix}")
    name = _video_model_name(values.pop("name", None))
    for key, value in values.items():
        if key.startswith("_") or not isinstance(value, (bool, int, float, str)):
            raise error(
                f"{source}: model.net.{key} is not a plain value ({type(value).__name__}); "
                f"model.net holds a model name and plain keyword values only; {fix}"
            )
    return a2model.build_model(name, num_classes, **values)
