r"""Node-level DP on Flower, in both threat models of :mod:`ssgd.privacy.node`.

**Trusted aggregator** (``NodePrivacy(..., split="central")``): :class:`PrivateSSGDStrategy`
adds calibrated noise once to the sum of the unit updates.
:class:`ssgd.distributed.flower.SSGDStrategy` accepts only updates that *are* unit vectors
(norm :math:`1 \pm` ``norm_tol``, or 0) and moves the global model by
:math:`\pm\eta/n\sum_j u_j`. The sum of the accepted updates therefore has sensitivity
:math:`\Delta = (1 + \mathrm{tol})` (add/remove one node) in global scope and
:math:`\Delta = (1 + \mathrm{tol})\sqrt L` in layer scope (:math:`L` unit tensors), enforced by
the server itself -- a misbehaving node cannot send more. The noise is calibrated to this
:math:`\Delta` whatever scope the ``NodePrivacy`` object was built with. This strategy adds :math:`\mathcal N(0, \sigma^2\Delta^2 I)`
to that sum (the server is the trusted aggregator -- the ``aggregate`` threat model with
``split="central"``; see :mod:`ssgd.privacy.node`), counts one release per round in an
Opacus accountant and reports ε in every round's metrics (``epsilon``, ``delta``).
The server sees each node's unit vector (it validates them), so the guarantee is against
everyone downstream of the server -- other nodes, whoever receives the global models --
not against the server.

**Node-local noise** (``NodePrivacy(..., mode="local")``, no trust in the server): every node
runs :class:`LocalNoiseMod` *outside* :class:`~ssgd.distributed.flower.SSGDMod`
(``mods=[LocalNoiseMod(min_noise_multiplier=...), SSGDMod()]``: Flower calls the first mod first, so it sees the
reply last, after SSGDMod normalised it) and sends :math:`u + \mathcal N(0, (\sigma\Delta)^2 I)`
with :math:`\Delta = 2` (any two datasets of a node are neighbours; two unit vectors differ by
at most 2). The strategy sends σ in every train message's ConfigRecord
(``ssgd-dp-noise-multiplier``) as a *request*: the node adds at least its own minimum
(``LocalNoiseMod(min_noise_multiplier=...)`` or node config ``min-noise-multiplier``, required,
> 0) and refuses a smaller σ with an error reply. The strategy adds no noise itself, and validates with a norm *bound*
instead of the unit-norm test (a noisy vector is not a unit vector):

.. math::
    \lVert u + n\rVert \le 1 + \lVert n\rVert \le 1 + s\sqrt{d + 2\sqrt{d x} + 2x}, \qquad
    s = \sigma\Delta,\ x = \ln(1/p),

which an honest node exceeds with probability at most ``p`` (``false_reject``, default
:math:`10^{-9}`; Laurent-Massart's :math:`\chi^2_d` tail, :func:`noisy_norm_bound`). NaN/inf,
shapes, dtypes and names are checked as before; a boosted update (e.g. ×1000) is rejected.
A node's influence on one round stays bounded by :math:`\eta B/|A|` -- but with local noise
that bound is about :math:`\eta s\sqrt d/|A|`, the size of the noise itself.
ε is per node: every reply a node sends (accepted or not: the server saw it) is one release
of the Gaussian mechanism with noise multiplier σ; the reported ``epsilon`` is that of the
node that released most often (with ``fraction_train=1``: every node, once per round).
That number is the server's; **the node keeps its own**: ``LocalNoiseMod`` counts every release
it makes (a zero-vector release after a failure too) with Opacus's accountant
(:class:`ssgd.privacy.ReleaseBudget`) before it computes, against its node config
``max-epsilon`` (default 10) at ``dp-delta`` (default 1e-5), and once the next release would
exceed it answers with the fixed text :data:`~.mod.BUDGET_SPENT`. A request refused after the
count (by ``SSGDMod``, from the request alone) still counts: the node counts what it committed
to, never less than it released. The count lives in a locked ledger file the node owns, which every run
and SuperNode restart continues: node config ``privacy-ledger=PATH``, by default
``<flwr home>/ssgd/privacy-ledger-<partition-id>.json`` (:func:`default_ledger_path`); the node owner's
opt-out ``privacy-ledger=memory`` keeps it in the node's ``Context.state``, which resets on every run the
server starts (docs/threat-model.md).

The node, not the server, owns its randomness: ``LocalNoiseMod(seed=None)`` draws every call's
noise from OS entropy; ``seed=int`` (tests, reproducible runs) derives it from (seed, the random salt
the node wrote into its ledger when it made it, the release's number in it) and is refused under
``privacy-ledger=memory``: a release number counted in a ledger does not repeat while the ledger is kept,
across runs and restarts (a *copied* ledger repeats its salt and numbers, hence its noise: never copy a
ledger), whereas a round
number (the server's), a node id (the SuperLink's) or a count in ``Context.state`` (reset by a new
run) would -- and the same noise twice cancels in the difference of two releases. A seed known to the server would let it
subtract the noise, so the server never sends one; and an untrusted server could send σ = 0, so the node's minimum σ is
required (a smaller σ gets an error reply, not an update). Under DP the reply carries the
noisy vector only: ``LocalNoiseMod`` drops every metric (a loss or a count would be released
outside the accountant).

Accounting (both modes): sampling rate 1 (no amplification is claimed: Flower samples a
fixed-size subset of nodes, not a Poisson sample). Node-local mode supports ``scope="global"``.

Usage::

    from ssgd.privacy import NodePrivacy
    from ssgd.distributed.flower import LocalNoiseMod, PrivateSSGDStrategy

    # trusted server
    privacy = NodePrivacy(target_epsilon=8.0, rounds=50, delta=1e-5, split="central")
    strategy = PrivateSSGDStrategy(privacy=privacy, mode="fedsgd", server_lr=0.1)
    # untrusted server: each node noises its own unit vector
    strategy = PrivateSSGDStrategy(privacy=NodePrivacy(1.0, mode="local"), mode="fedsgd", server_lr=0.1)
    app = ClientApp(mods=[LocalNoiseMod(min_noise_multiplier=1.0), SSGDMod()])
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from ...privacy import NodePrivacy, derive_seed, sensitivity
from ...privacy.accountant import check_noise_multiplier
from ...privacy.node import DEFAULT_BUDGET_DELTA, DEFAULT_MAX_EPSILON, BudgetSpentError, ReleaseBudget
from ...report.io import atomic_write_text
from . import keys
from .mod import BUDGET_SPENT, REFUSED, SSGDMod, error_reply
from .policy import PARTITION_ID, PRIVACY_LEDGER, PRIVACY_LEDGER_MEMORY, NodePolicy, check_outgoing
from .request import ARRAYS, read_fields
from .strategy import SSGDStrategy

__all__ = ["DP_NOISE_MULTIPLIER", "LocalNoiseMod", "PrivateSSGDStrategy", "noisy_norm_bound", "default_ledger_path",
           "flwr_home"]

log = logging.getLogger(__name__)

#: ConfigRecord key: the noise multiplier σ every node applies to its own unit vector (node-local mode).
DP_NOISE_MULTIPLIER = keys.DP_NOISE_MULTIPLIER


def noisy_norm_bound(std: float, dim: int, false_reject: float = 1e-9) -> float:
    r"""Largest norm accepted for a unit vector plus :math:`\mathcal N(0, \mathrm{std}^2 I_d)`:
    :math:`1 + \mathrm{std}\sqrt{d + 2\sqrt{dx} + 2x}`, :math:`x=\ln(1/p)`; an honest vector exceeds it
    with probability at most ``false_reject`` (Laurent & Massart 2000, :math:`\chi^2_d` upper tail)."""
    if not (isinstance(std, (int, float)) and math.isfinite(std) and std >= 0):
        raise ValueError(f"Invalid std={std!r}; must be a finite float >= 0")
    if not (isinstance(dim, int) and dim >= 1):
        raise ValueError(f"Invalid dim={dim!r}; must be an integer >= 1")
    if not (isinstance(false_reject, (int, float)) and 0 < false_reject < 1):
        raise ValueError(f"Invalid false_reject={false_reject!r}; must be in (0, 1), e.g. 1e-9")
    x = math.log(1.0 / false_reject)
    return 1.0 + std * math.sqrt(dim + 2.0 * math.sqrt(dim * x) + 2.0 * x)


def flwr_home() -> Path:
    """The node's Flower home, as Flower resolves it (``flwr.supercore.utils.get_flwr_home``): ``$FLWR_HOME``,
    else ``~/.flwr``. Read on every call (the environment of the process that runs the ClientApp)."""
    try:
        from flwr.supercore.utils import get_flwr_home
    except ImportError:  # Flower moved its helper: the same rule
        env = os.environ.get("FLWR_HOME")
        return Path(env) if env else Path.home() / ".flwr"
    return Path(get_flwr_home())


#: a node-config ``partition-id`` that may name a ledger file: an integer >= 0, or a short plain name
_LEDGER_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def default_ledger_path(node_config: Mapping[str, Any] | None) -> Path:
    """The ledger a node uses when its node config sets no ``privacy-ledger``:
    ``<flwr home>/ssgd/privacy-ledger-<partition-id>.json`` (:func:`flwr_home`, resolved now).

    Keyed by node config ``partition-id`` -- the node owner's setting (``ssgd flower up``/``local`` set it per
    node), which tells apart the nodes that share one Flower home -- never by ``Context.node_id`` or
    ``run_id``, which the SuperLink (the adversary) assigns: a new run id would be a new, empty ledger. A node
    config without ``partition-id`` uses ``<flwr home>/ssgd/privacy-ledger.json``, one count for every such
    node of that home (conservative: nodes sharing it share one budget). A ``partition-id`` that is neither an
    integer >= 0 nor a plain name (``[A-Za-z0-9][A-Za-z0-9_.-]*``, at most 64) is refused (ValueError): it names
    a file."""
    pid = dict(node_config or {}).get(PARTITION_ID)
    if pid is None:
        name = "privacy-ledger.json"
    elif isinstance(pid, int) and not isinstance(pid, bool) and pid >= 0:
        name = f"privacy-ledger-{pid}.json"
    elif isinstance(pid, str) and _LEDGER_KEY.fullmatch(pid):
        name = f"privacy-ledger-{pid}.json"
    else:
        raise ValueError(f"Invalid node config {PARTITION_ID}={pid!r} for the node's default {PRIVACY_LEDGER}: "
                         "use an integer >= 0 or a plain name, or set node config privacy-ledger=PATH")
    return flwr_home() / "ssgd" / name


class _NoiseModError(Exception):
    pass


class LocalNoiseMod:
    r"""Client mod: add :math:`\mathcal N(0, (\sigma\Delta)^2)` to every entry of the node's outgoing unit vector.

    List it *before* (outside) :class:`~ssgd.distributed.flower.SSGDMod`:
    ``ClientApp(mods=[LocalNoiseMod(min_noise_multiplier=1.0), SSGDMod()])``. σ is the
    request's ``ssgd-dp-noise-multiplier`` (sent by :class:`PrivateSSGDStrategy`), falling back
    to ``noise_multiplier``, and must be at least this node's minimum; the scope is the node's
    own (:class:`~.policy.NodePolicy`: node config ``ssgd-scope``, default global);
    :math:`\Delta` is :func:`ssgd.privacy.sensitivity` ``("node-local", scope, n_tensors)``.

    Args:
        noise_multiplier: default σ when the message sets none (``None``: the message must set it).
        min_noise_multiplier: the smallest σ this node accepts (> 0). Required, here or in the node
            config (``min-noise-multiplier``, which takes precedence): without it every request is refused.
        seed: ``None`` draws each call's noise from OS entropy; an int derives it from (seed, the random
            salt the node wrote into its ledger when it made it, the release's number in it) -- not the same
            twice while the ledger is kept (a new run or a SuperNode restart continues its count), nor for two
            nodes with two ledgers, whatever node ids the SuperLink assigns or paths they use; a *copied*
            ledger (same salt, same count) repeats it: never copy a ledger. A
            seeded mod under ``privacy-ledger=memory`` refuses every request: a count in ``Context.state``
            restarts in a new run, and the same noise twice would cancel in the difference of two releases
            (the node owner who deletes the ledger resets the budget too).
        unit_tol: how far from 1 the incoming norm may be (it must be a unit vector, or 0).
        max_epsilon, delta: this node's own release budget (node config ``max-epsilon``,
            ``dp-delta`` take precedence; default (10, 1e-5)). The node counts every release it
            makes -- a normal one and one on a zero vector after a failure alike -- with Opacus's
            accountant (:class:`~ssgd.privacy.ReleaseBudget`), *before* it computes; once the
            next release would take it past ``max_epsilon`` it answers with the fixed text
            :data:`~.mod.BUDGET_SPENT` and computes nothing. The server cannot raise the budget.
        ledger: the file where the count is kept (node config ``privacy-ledger`` takes precedence): it covers
            every run and survives a SuperNode restart; locked, so concurrent messages are counted one by
            one. ``None``/``""`` (the default): the node's default ledger,
            ``<flwr home>/ssgd/privacy-ledger-<partition-id>.json`` (:func:`default_ledger_path`: ``$FLWR_HOME``
            else ``~/.flwr`` of the process that runs the ClientApp, keyed by node config ``partition-id``,
            resolved at every release). ``"memory"``: the node owner opts out of the file; the count lives in
            the node's ``Context.state``, which **resets on every run the server starts** (and on a SuperNode
            restart) -- in flwr 1.42 the SuperLink, the adversary, chooses the run ids (docs/threat-model.md).

    The reply that leaves the node holds the noisy vector and nothing else (no metric: a
    loss or a count would be released outside the accountant). A request refused from its
    own content (a bad or too small σ, another scope, a malformed message) becomes an error
    reply with the fixed text :data:`~.mod.REFUSED`. **Anything that fails after that** -- a
    non-finite step, a raising ClientApp, an inner error reply, a reply that is not a unit
    vector (the mod listed inside SSGDMod) -- could depend on the data, so no error leaves:
    the node releases the mechanism's output on a zero vector (the same kind of noisy vector,
    counted by the strategy as a release) and logs the reason locally. The node never sends
    an un-noised vector or a data-dependent error.
    """

    def __init__(self, noise_multiplier: float | None = None, *, min_noise_multiplier: float | None = None,
                 seed: int | None = None, unit_tol: float = 1e-3, max_epsilon: float = DEFAULT_MAX_EPSILON,
                 delta: float = DEFAULT_BUDGET_DELTA, ledger: str | None = None) -> None:
        self.noise_multiplier = None if noise_multiplier is None else check_noise_multiplier(noise_multiplier)
        self.policy = NodePolicy(min_noise_multiplier=min_noise_multiplier, unit_tol=unit_tol, max_epsilon=max_epsilon,
                                 dp_delta=delta, privacy_ledger=str(ledger or ""))
        self.min_noise_multiplier = self.policy.min_noise_multiplier
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"Invalid seed={seed!r}; must be an int or None (OS entropy)")
        self.seed, self.unit_tol = seed, float(unit_tol)
        self.calls = 0

    def node_policy(self, ctxt) -> NodePolicy:
        return NodePolicy.from_node_config(getattr(ctxt, "node_config", None), self.policy)

    def settings(self, msg, ctxt=None) -> tuple[float, str]:
        """This call's (σ, scope): the request (:func:`~.request.read_fields`) checked against the node's policy."""
        policy = self.node_policy(ctxt)
        cfg = read_fields(msg)
        sigma = policy.check_noise_multiplier(cfg.get(DP_NOISE_MULTIPLIER, self.noise_multiplier))
        policy.check_request({k: v for k, v in cfg.items() if k == keys.SCOPE})
        return sigma, policy.scope

    #: where the node's release history lives under ``privacy-ledger=memory`` (its own Context.state)
    BUDGET_KEY = "ssgd-release-budget"

    def ledger_path(self, ctxt) -> str | None:
        """The file this node counts its releases in, resolved now (not at import: ``FLWR_HOME`` is read per
        call): node config ``privacy-ledger`` (else the constructor's ``ledger``), else the node's default
        ledger :func:`default_ledger_path`; ``None`` for ``privacy-ledger=memory`` (the node's Context.state)."""
        node_config = getattr(ctxt, "node_config", None)
        ledger = self.node_policy(ctxt).privacy_ledger
        if ledger == PRIVACY_LEDGER_MEMORY:
            return None
        return ledger or str(default_ledger_path(node_config))

    def charge(self, ctxt, sigma: float) -> tuple[float, int]:
        """Count one release at σ in this node's own budget (:class:`~ssgd.privacy.ReleaseBudget`) and return
        ``(ε spent after it, its release number)``; :class:`~ssgd.privacy.BudgetSpentError` (nothing counted)
        past the budget. The count lives in the node's ledger file (:meth:`ledger_path`: node config
        ``privacy-ledger``, by default one under the node's Flower home), or with ``privacy-ledger=memory`` in
        ``ctxt.state``."""
        eps, release, _ = self._charge(ctxt, sigma)
        return eps, release

    def _charge(self, ctxt, sigma: float) -> tuple[float, int, str | None]:
        """:meth:`charge`, plus the ledger's random salt (``None`` under ``privacy-ledger=memory``)."""
        policy = self.node_policy(ctxt)
        ledger = self.ledger_path(ctxt)
        if ledger is not None:
            if not policy.privacy_ledger:  # the node's default ledger: its folder is made here, private
                os.makedirs(os.path.dirname(ledger), mode=0o700, exist_ok=True)
            return _charge_ledger(ledger, sigma, policy.max_epsilon, policy.dp_delta)
        from flwr.app import ConfigRecord

        state = getattr(ctxt, "state", None)
        if state is None:
            raise _NoiseModError("no node state to keep the release budget in (privacy-ledger=memory)")
        stored = dict(state.config_records[self.BUDGET_KEY]) if self.BUDGET_KEY in state.config_records else None
        budget = ReleaseBudget.from_dict(stored, policy.max_epsilon, policy.dp_delta)
        eps = budget.charge(sigma)
        state[self.BUDGET_KEY] = ConfigRecord(budget.to_dict())
        return eps, budget.count, None

    def _check_seeded(self, ctxt) -> None:
        """Seeded noise is a function of (seed, ledger salt, release number): the number must never repeat, so it
        comes from the node's ledger file, which every run and restart continues; with ``privacy-ledger=memory``
        (a count that restarts in every new run): refused."""
        if self.seed is not None and self.ledger_path(ctxt) is None:
            raise _NoiseModError(f"a seeded LocalNoiseMod needs a ledger file, not {PRIVACY_LEDGER}="
                                 f"{PRIVACY_LEDGER_MEMORY} (a ledger keeps its count across runs; Context.state restarts "
                                 "in a new run, and the same noise twice cancels in the difference of two releases)")

    def _generator(self, salt: str | None, release: int) -> torch.Generator:
        self.calls += 1
        if self.seed is None:
            s = derive_seed(None)
        else:
            # keyed by the random salt the node wrote into its ledger when it made it -- never by Context.node_id
            # (the SuperLink assigns it, and could give two nodes of one seed the same id) nor by the ledger's path
            # (two nodes on two machines may use the same one): the same noise twice cancels in a difference.
            # A copied ledger carries its salt, and repeats the noise: never copy a ledger (docs/threat-model.md)
            if not salt:
                raise _NoiseModError("a seeded LocalNoiseMod needs its ledger's salt")
            s = derive_seed(self.seed, "local-noise", str(salt), int(release))
        return torch.Generator().manual_seed(s)

    def __call__(self, msg, ctxt, call_next):
        from flwr.app import Array, ArrayRecord, Message, MessageType, RecordDict

        if msg.metadata.message_type.split(".")[0] != MessageType.TRAIN:
            return call_next(msg, ctxt)
        try:
            sigma, scope = self.settings(msg, ctxt)
            model = {k: np.asarray(a.numpy()) for k, a in msg.content.array_records[ARRAYS].items()}
            if not model or any(a.dtype != np.float32 for a in model.values()):
                # decided from the request alone: a reply's dtype must never depend on whether the step failed
                raise _NoiseModError("the request's model is empty or not float32")
            self._check_seeded(ctxt)
            # counted before anything touches the data: every path below releases at most once (an inner refusal
            # decided from the request alone releases nothing and is counted all the same: never fewer than released)
            eps, release, salt = self._charge(ctxt, sigma)
        except BudgetSpentError as e:  # a function of the node's release history and sigma only
            return error_reply(msg, BUDGET_SPENT, f"LocalNoiseMod: {e}")
        except Exception as e:  # noqa: BLE001 - decided from the request alone; any failure gets the fixed text
            return error_reply(msg, REFUSED, f"LocalNoiseMod: {type(e).__name__}: {e}")
        log.info("LocalNoiseMod: release at sigma=%g; this node has spent epsilon=%.4g", sigma, eps)
        try:
            out = call_next(msg, ctxt)
        except Exception as e:  # noqa: BLE001 - whatever failed inside, the node releases the mechanism's output
            out, failure = None, f"the inner mods or ClientApp raised {type(e).__name__}: {e}"
        else:
            failure = None
        if out is not None and out.has_error():
            if out.error.reason == REFUSED:  # refused from the request alone, before any data was touched
                return out
            failure = f"the inner mods or ClientApp replied with an error: {out.error.reason}"
        arrays, key = None, ARRAYS
        if failure is None:
            try:
                records = out.content.array_records
                if len(records) != 1:
                    raise _NoiseModError(f"expected exactly one ArrayRecord in the reply, found {len(records)}")
                key = next(iter(records))
                arrays = {k: np.asarray(a.numpy()) for k, a in records[key].items()}
                if list(arrays) != list(model) or any(arrays[k].shape != model[k].shape for k in model):
                    raise _NoiseModError("the reply's arrays are not the model's")
                for k, a in arrays.items():
                    if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
                        raise _NoiseModError(f"{k!r} is not a finite floating-point array")
                tensors = [torch.from_numpy(a) for a in arrays.values()]
                if not check_outgoing(SSGDMod.outgoing_norms(tensors, scope), self.unit_tol):
                    raise _NoiseModError(
                        "the update is not a unit vector: list LocalNoiseMod before SSGDMod "
                        "(mods=[LocalNoiseMod(...), SSGDMod()]) so that it noises the vector SSGDMod produced")
            except (_NoiseModError, ValueError, TypeError) as e:
                failure = str(e)
        if failure is not None:
            # no data-dependent error leaves the node: it releases exactly what a normal step
            # releases -- the mechanism's output, here on a zero vector -- and logs why, locally
            log.error("LocalNoiseMod: %s; releasing noise on a zero vector instead", failure)
            arrays = {k: np.zeros(a.shape, dtype=np.float32) for k, a in model.items()}
        std = sigma * sensitivity("node-local", scope, len(arrays))
        gen = self._generator(salt, release)
        noisy = {}
        for k, a in arrays.items():
            z = torch.randn(a.shape, generator=gen, dtype=torch.float64).numpy()
            noisy[k] = np.asarray(a.astype(np.float64) + std * z, dtype=np.float32)
        # only the noisy vector leaves, always float32 under the record name ARRAYS (its form never depends on
        # whether the step failed): no metric (outside the accountant), no config echo
        return Message(content=RecordDict({ARRAYS: ArrayRecord({k: Array(v) for k, v in noisy.items()})}), reply_to=msg)


_SALT = re.compile(r"[0-9a-f]{64}")


def _charge_ledger(path: str, sigma: float, max_epsilon: float, delta: float) -> tuple[float, int, str]:
    """:meth:`ReleaseBudget.charge` on the history in the ledger file ``path`` (created when missing), under an
    exclusive lock so that concurrent ClientApp processes count one by one; a damaged ledger refuses (ValueError).
    Returns ``(ε after the release, its number in the ledger, the ledger's salt)``: 32 random bytes (hex) the
    node writes into the ledger when it makes it (or into an older ledger that has none), which keys seeded
    noise -- a value of the node's own, unlike the node id (the SuperLink's) or the path (the same on two
    nodes)."""
    import fcntl
    import json
    from pathlib import Path

    # the real file: a ledger named through a symlink (or ``..``) is the same ledger as its target -- one lock,
    # and the atomic rename replaces the target, never the link (which would fork the count)
    file = Path(os.path.realpath(path))
    lock = file.with_name(file.name + ".lock")
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            if file.exists():
                if os.stat(file).st_nlink > 1:
                    # a second name (hard link) would have its own lock file, and the atomic rename would split
                    # the two names into two ledgers: refused until the node owner removes the other name
                    raise ValueError(f"privacy-ledger {path}: the file has {os.stat(file).st_nlink} hard links; a "
                                     "ledger must have exactly one name (remove the other links; every release is "
                                     "refused until then)")
                try:
                    data = json.loads(file.read_text(encoding="utf-8"))
                    if not isinstance(data, dict) or data.get("format") != "ssgd-release-ledger":
                        raise ValueError("not an ssgd release ledger")
                    budget = ReleaseBudget.from_dict(data, max_epsilon, delta)
                    salt = data.get("salt", os.urandom(32).hex())
                    if not isinstance(salt, str) or not _SALT.fullmatch(salt):
                        raise ValueError("its salt is not 64 hex digits")
                except (ValueError, TypeError) as e:
                    raise ValueError(f"privacy-ledger {path}: {e}; fix or move the file (every release is "
                                     "refused until then)") from None
            else:
                budget, salt = ReleaseBudget(max_epsilon, delta), os.urandom(32).hex()
            eps = budget.charge(sigma)
            atomic_write_text(file, json.dumps({"format": "ssgd-release-ledger", "salt": salt, **budget.to_dict()}))
            return eps, budget.count, salt
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class PrivateSSGDStrategy(SSGDStrategy):
    """:class:`SSGDStrategy` with node-level DP and an ε per round (see the module doc).

    Args:
        privacy: a :class:`ssgd.privacy.NodePrivacy`: ``mode="aggregate", split="central"``
            (the server adds all of the noise to the sum, calibrated to the sensitivity of the
            accepted sum in this strategy's scope) or ``mode="local"`` (every node adds its own
            noise with :class:`LocalNoiseMod`; the server adds none, sends σ to the nodes and
            accepts norms up to :func:`noisy_norm_bound`; ``scope="global"`` only).
        false_reject: node-local mode: the probability that an honest node's noisy vector is
            rejected (sets the norm bound).
        **kwargs: everything :class:`SSGDStrategy` takes.
    """

    def __init__(self, *, privacy: NodePrivacy, false_reject: float = 1e-9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(privacy, NodePrivacy):
            raise TypeError(f"privacy must be an ssgd.privacy.NodePrivacy, got {type(privacy).__name__}")
        self.local = privacy.noise.mode == "local"
        if self.local:
            if self.scope != "global":
                raise ValueError(f"node-local noise on Flower supports scope='global' only (got scope={self.scope!r})")
            if privacy.noise.sensitivity != sensitivity("node-local", "global", 1):
                raise ValueError("node-local mode needs NodePrivacy(mode='local') with scope='global', n_tensors=1 "
                                 f"(sensitivity 2; got {privacy.noise.sensitivity:g})")
            noisy_norm_bound(1.0, 1, false_reject)  # validates false_reject
        elif privacy.noise.mode != "aggregate" or privacy.noise.split != "central" or privacy.noise.share != 1.0:
            raise ValueError("PrivateSSGDStrategy adds the noise on the server: use NodePrivacy(mode='aggregate', "
                             f"split='central', rank=0) (got mode={privacy.noise.mode!r}, "
                             f"split={privacy.noise.split!r}, rank={privacy.noise.rank}), or NodePrivacy(mode='local') "
                             "with LocalNoiseMod on the nodes")
        self.privacy = privacy
        self.false_reject = float(false_reject)
        #: node-local mode: how many updates each node has released (sent) so far
        self.releases: dict[int, int] = {}

    def _n_tensors(self) -> int:
        if self.spec is not None:
            return len(self.spec.names)
        if self.update_keys is not None:
            return len(self.update_keys)
        if self.scope == "global":
            return 1
        raise RuntimeError("the layer-scope sensitivity depends on the number of tensors: pass update_keys or "
                           "read it after the first round")

    @property
    def sensitivity(self) -> float:
        r"""Aggregate mode: the largest norm the accepted sum changes by when one node is added or
        removed, :math:`(1+\mathrm{tol})` (global scope) or :math:`(1+\mathrm{tol})\sqrt L` (layer scope).
        Node-local mode: the sensitivity of one node's unit vector, 2."""
        if self.local:
            return self.privacy.noise.sensitivity
        return (1.0 + self.norm_tol) * sensitivity("node", self.scope, self._n_tensors())

    @property
    def noise_std(self) -> float:
        """Aggregate mode: the std per entry of the noise added to the sum of the unit updates, σΔ."""
        return self.privacy.noise_multiplier * self.sensitivity

    @property
    def node_noise_std(self) -> float:
        """Node-local mode: the noise std per entry every node adds, σΔ."""
        return self.privacy.noise_multiplier * self.privacy.noise.sensitivity

    def spec_for(self, arrays):
        spec = super().spec_for(arrays)
        if not self.local:
            return spec
        dim = int(sum(int(np.prod(s)) for s in spec.shapes))
        return dataclasses.replace(spec, norm_bound=noisy_norm_bound(self.node_noise_std, dim, self.false_reject))

    def configure_train(self, server_round: int, arrays, config, grid):
        messages = list(super().configure_train(server_round, arrays, config, grid))
        if self.local:
            for m in messages:
                m.content[self.configrecord_key][DP_NOISE_MULTIPLIER] = float(self.privacy.noise_multiplier)
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Any]):
        if self.local:
            return self._aggregate_local(server_round, replies)
        spec = self.spec
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            return arrays, metrics  # nothing released this round
        from flwr.app import Array, ArrayRecord

        n_ok = len(self.rounds[server_round]["accepted"])
        sign = -1.0 if self.mode == "fedsgd" else 1.0
        # the noise joins the sum before the 1/n: std sigma*Delta on the sum, whatever the NodePrivacy's own Delta
        own_std = self.privacy.noise.std
        scale = sign * self.server_lr / n_ok * (self.noise_std / own_std if own_std > 0 else 0.0)
        names = set(spec.names)
        new = {}
        for name, arr in arrays.items():
            if name in names:
                w = np.asarray(arr.numpy())
                z = torch.zeros(w.shape, dtype=torch.float64)
                self.privacy.add_([z], scale=scale)
                new[name] = Array(np.asarray(w + z.numpy(), dtype=w.dtype))
            else:
                new[name] = arr
        self.privacy.step()
        eps = self.privacy.epsilon()
        if metrics is not None:
            metrics["epsilon"] = float(eps)
            metrics["delta"] = float(self.privacy.accountant.delta)
        log.info("round %d: noise sigma=%g (std %g) on the sum of %d unit updates; epsilon=%.4g at delta=%g per node",
                 server_round, self.privacy.noise_multiplier, self.noise_std, n_ok, eps, self.privacy.accountant.delta)
        return ArrayRecord(new), metrics

    def _aggregate_local(self, server_round: int, replies: Iterable[Any]):
        replies = list(replies)
        sampled = self.sampled.get(server_round, set())
        for msg in replies:
            try:
                node = int(msg.metadata.src_node_id)
            except Exception:  # counted as rejected by the parent
                continue
            if not msg.has_error() and node in sampled:  # the node sent its noisy vector: one release
                self.releases[node] = self.releases.get(node, 0) + 1
        arrays, metrics = super().aggregate_train(server_round, replies)
        worst = max(self.releases.values(), default=0)
        if worst > self.privacy.accountant.steps:
            self.privacy.step(worst - self.privacy.accountant.steps)
        eps = self.privacy.epsilon()
        if metrics is not None:
            metrics["epsilon"] = float(eps)
            metrics["delta"] = float(self.privacy.accountant.delta)
        log.info("round %d: node-local noise sigma=%g (std %g per entry, norm bound %.6g); epsilon=%.4g at "
                 "delta=%g per node (%d release(s) by the most exposed node)", server_round,
                 self.privacy.noise_multiplier, self.node_noise_std, self.spec.norm_bound, eps,
                 self.privacy.accountant.delta, worst)
        return arrays, metrics
