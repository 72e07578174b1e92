r"""Label recovery from the last layer's gradient (iDLG, Zhao et al. 2020; batches after Geng et al. 2021).

For a cross-entropy loss the gradient of the last linear layer's bias is
:math:`\partial L/\partial b_c = \frac1B\sum_n (p_{nc} - y_{nc})` and the weight row's
gradient is :math:`\frac1B\sum_n (p_{nc} - y_{nc})\, h_n` with features :math:`h_n`
(non-negative after a sigmoid/ReLU). For one image the true class is the only negative
entry. For a batch, classes with a negative entry are present; the remaining slots are
filled by estimating each class's count from the entry's depth below the "absent class"
level, which is scale-free (it works on a unit vector, SSGD's shared update, too).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

__all__ = ["LABEL_RULES", "last_layer_signal", "recover_labels", "shard_assignments"]


def last_layer_signal(shared: list[Tensor], num_classes: int) -> Tensor:
    """The per-class signal: the last layer's bias gradient if present, else its weight rows' sums."""
    for i in range(len(shared) - 1, -1, -1):
        t = shared[i]
        if t.ndim == 1 and t.shape[0] == num_classes and i > 0 and shared[i - 1].ndim == 2 \
                and shared[i - 1].shape[0] == num_classes:
            return t.detach().double()
        if t.ndim == 2 and t.shape[0] == num_classes:
            return t.detach().double().sum(1)
    raise ValueError(f"no last linear layer with {num_classes} outputs found among the shared tensors "
                     f"(shapes {[tuple(t.shape) for t in shared]}); label recovery needs a linear classifier head")


LABEL_RULES = ("counts", "bias-corrected", "wainakh-simple")


def recover_labels(shared: list[Tensor], num_classes: int, batch_size: int, rule: str = "counts") -> Tensor:
    """Recover ``batch_size`` labels (a multiset, sorted) from one shared update.

    ``rule``: ``counts`` (this module's: present classes, then counts from each entry's depth below the
    absent-class level); ``bias-corrected`` and ``wainakh-simple`` are the label strategies of the
    ``breaching`` framework (Geiping et al.; Wainakh et al. 2022, "User-Level Label Leakage from
    Gradients in Federated Learning"), ported: every class with a negative signal once, then the
    remaining slots to the most negative signal after subtracting an estimated per-example impact
    (``bias-corrected``: the sum of the negative entries over B; ``wainakh-simple``: that times
    ``1 + 1/C``). All three are scale-free, so they work on unit vectors too. At batch 1 all are iDLG's
    argmin."""
    if rule not in LABEL_RULES:
        raise ValueError(f"unknown label rule {rule!r}; expected one of {', '.join(LABEL_RULES)}")
    s = last_layer_signal(shared, num_classes)
    if batch_size == 1:
        return s.argmin().reshape(1)
    if rule != "counts":
        return _impact_rule(s, batch_size, (1 + 1 / num_classes) if rule == "wainakh-simple" else 1.0)
    order = torch.argsort(s)
    present = [int(c) for c in order if s[c] < 0][:batch_size]
    if not present:
        present = [int(order[0])]
    absent = s[s >= 0]
    base = float(absent.mean()) if absent.numel() else float(s.max().clamp_min(0))
    # untrained-model approximation: p ~ uniform, so s_c ~ lam * (1/C - n_c/B) and base ~ lam / C
    lam = base * num_classes if base > 0 else float(-s[s < 0].sum()) or 1.0
    per_example = lam / batch_size
    counts = {c: 1 for c in present}
    while sum(counts.values()) < batch_size:
        # give the next example to the class whose signal is least explained by its current count
        resid = {c: (base - float(s[c])) - counts[c] * per_example for c in counts}
        c = max(resid, key=resid.get)
        counts[c] += 1
    labels = [c for c, n in sorted(counts.items()) for _ in range(n)]
    return torch.tensor(labels, dtype=torch.long)


def shard_assignments(labels: Tensor, shards: int, limit: int | None = None) -> list[Tensor]:
    """Every distinct way to deal the label multiset ``labels`` into ``shards`` shards of equal size.

    Shards are unordered (SSGD(m) sums their unit vectors) and so is each shard's content, so a deal is
    a set of multisets; each is returned as a ``(B,)`` tensor whose contiguous blocks of ``B // shards``
    are the shards (how :class:`~ssgd.attacks.engine.DummyGradients` cuts a dummy batch). Sorted, the
    first one is the sorted multiset itself. ``limit``: at most that many (the first ones in that order).
    """
    labs = sorted(int(v) for v in labels.reshape(-1).tolist())
    if shards < 1 or len(labs) % shards:
        raise ValueError(f"shards={shards} must divide the {len(labs)} labels")
    size = len(labs) // shards
    deals: set[tuple[tuple[int, ...], ...]] = set()

    def deal(rest: tuple[int, ...], acc: tuple[tuple[int, ...], ...]) -> None:
        if not rest:
            deals.add(tuple(sorted(acc)))
            return
        first, others = rest[0], rest[1:]  # the smallest label left opens the next shard
        for combo in sorted(set(itertools.combinations(others, size - 1))):
            left = list(others)
            for c in combo:
                left.remove(c)
            deal(tuple(left), acc + ((first, *combo),))

    deal(tuple(labs), ())
    out = [torch.tensor([c for shard in d for c in shard], dtype=torch.long) for d in sorted(deals)]
    return out[:limit] if limit is not None else out


def _impact_rule(s: Tensor, batch_size: int, factor: float) -> Tensor:
    """breaching's stage 1 / stage 2 recovery on the per-class signal ``s`` (see :func:`recover_labels`)."""
    s = s.clone()
    neg = s < 0
    labels = [int(c) for c in torch.nonzero(neg).flatten()][:batch_size]
    impact = float(s[neg].sum()) * factor / batch_size if bool(neg.any()) else -1.0
    s[neg] -= impact
    while len(labels) < batch_size:
        c = int(s.argmin())
        labels.append(c)
        s[c] -= impact
    return torch.tensor(sorted(labels), dtype=torch.long)
