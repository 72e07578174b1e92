"""Names of the settings the SSGD server strategy sends to nodes in every train message's ConfigRecord.

Flower builds mods at import time, before any run config exists; so the client mod reads
its settings *per call* from these keys (falling back to its constructor defaults).
"""

from __future__ import annotations

__all__ = ["MODE", "SCOPE", "EPS", "LOCAL_STEPS", "CLIENT_LR", "BATCH_SIZE", "MODES", "ROUND", "SEED"]

MODE = "ssgd-mode"            # "fedsgd" (the reply is a gradient) | "delta" (the reply is locally trained weights)
SCOPE = "ssgd-scope"          # "global" | "layer"
EPS = "ssgd-eps"              # float, the transform's eps
LOCAL_STEPS = "local-steps"   # int, SGD steps per round in "delta" mode
CLIENT_LR = "client-lr"       # float, the node's local SGD learning rate in "delta" mode
BATCH_SIZE = "batch-size"     # int
SEED = "seed"                 # int, base seed of the node's batch sampling
ROUND = "server-round"        # set by the strategy (as Flower's own strategies do)

MODES = ("fedsgd", "delta")
