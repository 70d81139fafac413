"""Control triggers: the null that accounts for a suspect's own bias.

An innocent model may send most abstract images to one class, or react to any stamp. Then a
claimant who writes a ``target`` set for that class, or grinds keys, sees far more matches than
the binomial's ``1/K`` predicts. The control test asks the question a dispute needs instead:
does the suspect reproduce the owner's keyed triggers more often than triggers drawn from the
*same generator* with keys the owner never embedded? Under the null (the suspect never learned
the owner's set) the owner's set is just one more draw, so its match rate is exchangeable with
the controls' and a two-sample exact test (Fisher's, conditional on the total) is valid whatever
the suspect does.

Control keys are derived from the owner's secret (domain-separated), so a suspect's operator who
sees the queries cannot tell triggers from controls, and they are fixed by the published set: the
command line offers no way to choose them, since a claimant who could pick the controls' number
or seed could also search them for controls the suspect happens to match less often (the
library's ``seed`` is for research). :class:`QueryPlan` interleaves both in a keyed order for
black-box queries.

Example:
    >>> from jaxwm import triggers
    >>> ts = triggers.make_trigger_set("noise", secret="k", size=4, image_shape=(8, 8, 1), num_classes=3)
    >>> [len(c) for c in control_sets(ts.params, "k", count=2)]
    [4, 4]
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxwm.errors import TriggerSetError
from jaxwm.trigger_images import keyed_permutation
from jaxwm.triggers import TriggerSet, make_trigger_sets

DEFAULT_CONTROL_SETS = 4
# Kinds whose triggers share a per-key random component (content: one stamp for the whole set):
# their matches cluster by key, so the key is the statistical unit (verify: a rank test).
CLUSTERED_KINDS = ("content",)
MAX_CLUSTERED_SETS = 2000


def clustered(kind: str) -> bool:
    """Whether a kind's triggers share a per-key component (the control test then ranks sets).

    Example:
        >>> clustered("content"), clustered("noise")
        (True, False)
    """
    return kind in CLUSTERED_KINDS


def control_count(kind: str, alpha: float) -> int:
    """How many control sets the control test needs for ``kind`` at level ``alpha``.

    Independent triggers pool their controls (Fisher's test): ``DEFAULT_CONTROL_SETS``. A
    clustered kind's rank test has p >= 1/(B+1), so it needs ``B >= 1/alpha`` whole sets (1,000
    at 1e-3), at most ``MAX_CLUSTERED_SETS``; a smaller alpha is out of a rank test's reach, so
    only ``DEFAULT_CONTROL_SETS`` are drawn and the verdict cannot be positive.

    Example:
        >>> control_count("noise", 1e-3), control_count("content", 1e-3)
        (4, 1000)
    """
    needed = math.ceil(1.0 / alpha - 1e-9)
    if not clustered(kind) or needed > MAX_CLUSTERED_SETS:
        return DEFAULT_CONTROL_SETS  # pooled; or out of a rank test's reach, so keep it cheap
    return int(max(DEFAULT_CONTROL_SETS, needed))


def control_secret(secret: str, number: int, seed: str = "") -> str:
    """The key of control set ``number``: derived from the owner's secret, never embedded.

    Args:
        secret: The owner's key.
        number: Which control set (0, 1, ...).
        seed: Optional public string; a verifier changes it to draw other controls.

    Returns:
        64 hex characters.

    Example:
        >>> control_secret("k", 0) != control_secret("k", 1)
        True
    """
    parts = [b"jaxwm-control-v1", secret.encode(), seed.encode(), str(number).encode()]
    return hashlib.sha256(b"".join(len(p).to_bytes(8, "big") + p for p in parts)).hexdigest()


def control_sets(
    params: Mapping[str, Any],
    secret: str,
    *,
    count: int = DEFAULT_CONTROL_SETS,
    seed: str = "",
    source_images: np.ndarray | None = None,
    source_labels: np.ndarray | None = None,
) -> list[TriggerSet]:
    """Sets drawn like the owner's (same kind, size, policy, target, sources) with fresh keys.

    Args:
        params: The owner's set's ``params`` or its manifest.
        secret: The owner's key (control keys derive from it: :func:`control_secret`).
        count: Number of control sets, each as large as the owner's (so the controls hold at
            least as many images as the owner's set).
        seed: Public string selecting other controls.
        source_images: As for the owner's set (all kinds but ``noise``).
        source_labels: As for the owner's set.

    Returns:
        ``count`` sets; an empty list for ``kind="folder"`` (no generator to draw from).

    Example:
        >>> control_sets({"kind": "folder"}, "k")
        []
    """
    if params["kind"] == "folder":
        return []
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise TriggerSetError(f"count (control sets) must be an int >= 1; got {count!r}")
    policy = params.get("label_policy", "random")
    return make_trigger_sets(  # checks and hashes the source pool once for all `count` sets
        params["kind"],
        keys=[control_secret(secret, j, seed) for j in range(count)],
        size=int(params["size"]),
        image_shape=tuple(params["image_shape"]),
        num_classes=int(params["num_classes"]),
        label_policy=policy,
        target_class=int(params.get("target_class", 0)),
        source_images=source_images,
        source_labels=source_labels,
        index=int(params.get("index", 0)),
    )


@dataclasses.dataclass(frozen=True)
class QueryPlan:
    """Every image a verification queries, in one keyed order, and where each answer belongs.

    Attributes:
        images: ``uint8`` ``(Q, H, W, C)`` in query order.
        owner: Per owner set, the query positions of its triggers (in the set's order).
        control: Per owner set, the query positions of its control triggers, concatenated.
        control_labels: Per owner set, the labels of its controls, concatenated.
    """

    images: np.ndarray
    owner: list[np.ndarray]
    control: list[np.ndarray]
    control_labels: list[np.ndarray]

    def split(self, answers: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Answers in query order -> (owner predictions per set, control predictions per set).

        Example:
            >>> plan.split(labels)  # doctest: +SKIP
        """
        ans = np.asarray(answers)
        if ans.shape != (len(self.images),):
            raise TriggerSetError(
                f"expected {len(self.images)} answers (one per query), got shape {ans.shape}"
            )
        return [ans[i] for i in self.owner], [ans[i] for i in self.control]


def query_plan(
    sets: Sequence[TriggerSet],
    controls: Sequence[Sequence[TriggerSet]],
    secret: str,
    seed: str = "",
) -> QueryPlan:
    """Interleave owner sets and their controls in a keyed order for black-box queries.

    Args:
        sets: The owner's sets.
        controls: For each owner set, its control sets (possibly empty).
        secret: The owner's key (the order derives from it, so the suspect cannot tell which
            queries are the owner's).
        seed: The controls' public seed (part of the order's derivation).

    Returns:
        The :class:`QueryPlan`.

    Example:
        >>> plan = query_plan([ts], [control_sets(ts.params, "k")], "k")  # doctest: +SKIP
    """
    if len(sets) != len(controls):
        raise TriggerSetError("query_plan needs one list of controls per owner set")
    blocks, kinds = [], []
    for i, (ts, ctl) in enumerate(zip(sets, controls, strict=True)):
        blocks.append(ts.images)
        kinds.append(("owner", i))
        for c in ctl:
            blocks.append(c.images)
            kinds.append(("control", i))
    shapes = {b.shape[1:] for b in blocks}
    if len(shapes) != 1:
        raise TriggerSetError(f"all sets must share one image shape to be queried; got {shapes}")
    flat = np.concatenate(blocks)
    order = keyed_permutation(secret, f"query-order:{seed}", len(flat))
    position = np.empty(len(flat), np.int64)
    position[order] = np.arange(len(flat))  # flat index -> its query position
    owner: list[np.ndarray] = [np.zeros(0, np.int64)] * len(sets)
    control: list[list[np.ndarray]] = [[] for _ in sets]
    start = 0
    for block, (what, i) in zip(blocks, kinds, strict=True):
        pos = position[start : start + len(block)]
        if what == "owner":
            owner[i] = pos
        else:
            control[i].append(pos)
        start += len(block)
    labels = [
        np.concatenate([c.labels for c in ctl]) if ctl else np.zeros(0, np.int32)
        for ctl in controls
    ]
    ctl_pos = [np.concatenate(c) if c else np.zeros(0, np.int64) for c in control]
    return QueryPlan(flat[order], owner, ctl_pos, labels)
