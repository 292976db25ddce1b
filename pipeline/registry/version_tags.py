"""What a registered version carries about its evaluation: the tags the register stage writes and
the promotion gate reads (one contract, one module).

``evaluation`` holds the evaluate stage's record as JSON (setting, shards_dir, metrics) and
``eval.fingerprint`` its setting's fingerprint; the headline metrics are the run's, in this order.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING

from pipeline.evaluation.setting import EvalRecord, EvalSetting

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

HEADLINE_METRICS = ("video_top1", "video_top5", "clip_top1", "clip_top5")
EVALUATION_TAG = "evaluation"  # model-version tag: the evaluation's setting, fingerprint, metrics (JSON)


def evaluation_tags(record: EvalRecord) -> dict[str, str]:
    """A version's evaluation as tags: ``evaluation`` (JSON, what the gate reads), ``eval.fingerprint``."""
    body = {"setting": asdict(record.setting), "shards_dir": record.shards_dir, "metrics": record.metrics}
    return {EVALUATION_TAG: json.dumps(body, sort_keys=True), "eval.fingerprint": record.setting.fingerprint}


def recorded_evaluation(version: ModelVersion) -> dict:
    """The version's ``evaluation`` tag (setting, shards_dir, metrics); empty when it has none."""
    try:
        body = json.loads(version.tags.get(EVALUATION_TAG, "{}"))
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def evaluation_setting(version: ModelVersion) -> EvalSetting | None:
    """The data and views the version's metrics were measured on; None when not recorded."""
    try:
        return EvalSetting.from_dict(recorded_evaluation(version).get("setting") or {})
    except ValueError:
        return None
