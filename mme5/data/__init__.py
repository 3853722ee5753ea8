"""The streaming data path: shard-set mixtures, exact resume, counted skips of bad data."""

from mme5.data.datamodule import DemoSettings, ShardDataModule
from mme5.data.pipeline import MixtureDataset, ReaderPosition, read_shard
from mme5.data.shardsets import ShardSet, expand_shards, resolve, shard_sizes
from mme5.data.skips import DataError, SkipCounter, format_counts

__all__ = [
    "DataError",
    "DemoSettings",
    "MixtureDataset",
    "ReaderPosition",
    "ShardDataModule",
    "ShardSet",
    "SkipCounter",
    "expand_shards",
    "format_counts",
    "read_shard",
    "resolve",
    "shard_sizes",
]
