"""Names of the settings the SSGD server strategy sends to nodes in every train message's ConfigRecord.

The node treats them as requests: its privacy-relevant settings (scope, eps, batch size, the
noise multiplier) come from its own configuration (:mod:`.policy`), and a request asking for
less protection than that is refused with an error reply naming the key.
"""

from __future__ import annotations

__all__ = ["MODE", "SCOPE", "EPS", "LOCAL_STEPS", "CLIENT_LR", "BATCH_SIZE", "MODES", "PARTITIONS", "ROUND", "SEED",
           "DP_NOISE_MULTIPLIER"]

MODE = "ssgd-mode"            # "fedsgd" (the reply is a gradient) | "delta" (the reply is locally trained weights)
SCOPE = "ssgd-scope"          # "global" | "layer"
EPS = "ssgd-eps"              # float, the transform's eps
LOCAL_STEPS = "local-steps"   # int, SGD steps per round in "delta" mode
CLIENT_LR = "client-lr"       # float, the node's local SGD learning rate in "delta" mode
BATCH_SIZE = "batch-size"     # int
SEED = "seed"                 # int, base seed of the node's batch sampling
ROUND = "server-round"        # set by the strategy (as Flower's own strategies do)
DP_NOISE_MULTIPLIER = "ssgd-dp-noise-multiplier"  # float, node-local DP: the sigma every node applies

MODES = ("fedsgd", "delta")
#: how the training split is divided between the nodes (node config ``partition``)
PARTITIONS = ("iid", "dirichlet")
