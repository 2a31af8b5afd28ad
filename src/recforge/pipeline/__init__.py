"""Multi-channel recall -> rank -> re-rank.

``recforge.pipeline.recall``: ``RecallPipeline`` (channels with quotas and weights, quota
or weighted merge, popularity fallback, provenance, save/load) and ``evaluate_recall``.
"""

from recforge.pipeline.recall import (
    Channel,
    ChannelConfig,
    RecallConfig,
    RecallPipeline,
    RecallResult,
    evaluate_recall,
    recall_config,
)

__all__ = [
    "Channel",
    "ChannelConfig",
    "RecallConfig",
    "RecallPipeline",
    "RecallResult",
    "evaluate_recall",
    "recall_config",
]
