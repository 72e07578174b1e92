"""SSGD on Flower (flwr 1.42, Message API): every node sends only the unit vector of its update.

* :class:`SSGDMod` -- client mod: the outgoing gradient (FedSGD) or model delta becomes a unit vector.
* :class:`SSGDStrategy` -- server strategy: validates every update, rejects bad ones (logged
  with the node id), applies the rest with a server-side learning rate.
* ``ssgd.distributed.flower.client_app:app`` / ``server_app:app`` -- the ready apps;
  :func:`run_server` runs the server logic on any ``Grid``.
* :class:`InProcessGrid` -- N nodes running the same ``ClientApp`` in this process.
* :class:`Deployment` -- a real SuperLink and N SuperNodes on 127.0.0.1 (``ssgd flower up``).
* :class:`NodePolicy` -- a node's own privacy settings (scope, eps, allowed metrics, minimum
  batch size and noise multiplier); no server message can lower them.
* :class:`PrivateSSGDStrategy`, :class:`LocalNoiseMod` -- node-level DP (server-side noise on
  the sum, or node-local noise).
* :func:`current_request` -- in a ClientApp's train function: the request :class:`SSGDMod`
  resolved against the node's policy (batch size, local steps, ...): compute with it, never
  with the run config.
* :class:`AppSigner`, :class:`AppRegistry` -- sign the app (FAB) so that SuperNodes started with
  ``--trusted-entities`` run only it.

Needs ``flwr`` (``pip install 'ssgd[flower]'``); ``import ssgd.distributed`` does not import it.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "SSGDMod", "ssgd_mod", "SSGDStrategy", "NotEnoughNodesError", "UpdateSpec", "Verdict", "validate_update",
    "FlowerRunConfig", "FaultMod", "FAULTS", "InProcessGrid", "run_server", "save_checkpoint", "load_checkpoint",
    "CheckpointMismatchError", "Deployment", "DeploymentError", "run_in_process", "NodePolicy", "PolicyError",
    "DP_NOISE_MULTIPLIER", "LocalNoiseMod", "PrivateSSGDStrategy", "noisy_norm_bound", "NodeRequest",
    "current_request", "AppSigner", "AppRegistry",
]

_EXPORTS = {
    "SSGDMod": "mod", "ssgd_mod": "mod", "SSGDStrategy": "strategy", "NotEnoughNodesError": "strategy",
    "UpdateSpec": "validation", "Verdict": "validation", "validate_update": "validation",
    "FlowerRunConfig": "config", "FaultMod": "faults", "FAULTS": "faults", "InProcessGrid": "local",
    "run_server": "server_app", "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
    "CheckpointMismatchError": "checkpoint", "Deployment": "deploy", "DeploymentError": "deploy",
    "run_in_process": "deploy", "NodePolicy": "policy", "PolicyError": "policy", "DP_NOISE_MULTIPLIER": "privacy",
    "LocalNoiseMod": "privacy", "PrivateSSGDStrategy": "privacy", "noisy_norm_bound": "privacy",
    "NodeRequest": "request", "current_request": "request", "AppSigner": "trust", "AppRegistry": "trust",
}


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'ssgd.distributed.flower' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
