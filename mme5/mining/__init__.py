"""Hard-negative mining with the model being trained (``mme5 mine``): positive-aware top-k retrieval
over a shard set's candidates, written as a new shard set with a mining report."""

from mme5.mining.mine import REPORT_FILE, MiningError, MiningOptions, MiningReport, check_paths, mine
from mme5.mining.retrieve import Retrieved, mine_topk, thresholds

__all__ = [
    "REPORT_FILE",
    "MiningError",
    "MiningOptions",
    "MiningReport",
    "Retrieved",
    "check_paths",
    "mine",
    "mine_topk",
    "thresholds",
]
