"""Ownership verification: does a suspect model reproduce the owner's trigger labels?

A verdict is a claim about someone else's model, so it must not be positive for a model nobody
watermarked, whatever the claimant chose (labels, class count, key, images). Every test below
asks how an *innocent* suspect would behave, and ownership needs every test that applies:

* **Control test** (whenever the set has a generator): the suspect's match rate on the owner's
  keyed triggers against its rate on control triggers drawn from the same generator with keys
  the owner never embedded (:mod:`jaxwm.controls`); one-sided Fisher exact test. Under the null
  the owner's set is one more draw from that generator, so this is valid *whatever the suspect
  prefers*: a suspect that sends most abstract images to class 1 does so on the controls too.
  Fisher's test needs triggers that are independent given the generator (``noise``,
  ``unrelated``). ``content`` triggers of one key share one stamp, so their matches cluster by
  key; there the test ranks the owner's set among whole control sets (p >= 1/(B+1)).
* **Label-permutation test** (labels that vary): the matches against the owner's labels against
  the matches under every relabelling by a permutation (exact, :mod:`jaxwm.stats`). It accounts
  for a suspect's bias over classes; a ``target`` set (one label) gets no evidence from it.
* **Binomial test** against chance ``1/K`` (``1/(K-1)`` where labels avoid the source class,
  :func:`jaxwm.triggers.chance_level`). Exact for random labels on abstract images, but blind to
  a suspect's bias, so it decides only where no control test is possible (``kind=folder``); it
  is always reported.
* **Null models** (optional): retention must exceed a threshold fitted on independently trained
  models whose false-positive rate is bounded at ``fpr`` with the stated confidence
  (order statistics; ``stats.null_threshold_bounded``). With too few models the maximum is used
  and the verdict states the weaker bound it achieves.

The p-value of the verdict is the largest p-value of the deciding tests (an intersection-union
test: valid at ``alpha`` because every test must reject). A set with no test that accounts for
the suspect's bias (a target-label folder set) is never owned. Several sets tested on one
suspect are Holm-corrected (:func:`decide_sets`).

The package's modules: :mod:`jaxwm.verify.verdict` (the tests and the verdict of one set),
:mod:`jaxwm.verify.sets` (Holm over several sets), :mod:`jaxwm.verify.predictions` (the
suspect's answers as labels). Model evaluation stays with the caller, except
:func:`predict_labels`, which batches a predict function over the trigger images.

Example:
    >>> import numpy as np
    >>> labels = np.arange(100) % 10  # a suspect that reproduces all 100 trigger labels
    >>> v = verify_predictions(labels, labels, num_classes=10)
    >>> v.owned, decide_sets([v, v])[0]
    (True, True)
"""

from jaxwm.verify.predictions import (
    check_predictions,
    predict_controls,
    predict_labels,
    retention,
)
from jaxwm.verify.sets import decide_sets
from jaxwm.verify.verdict import (
    DEFAULT_ALPHA,
    DEFAULT_CONFIDENCE,
    DEFAULT_FPR,
    EXACT_PERMUTATION_MAX,
    TestResult,
    Verdict,
    null_threshold,
    verify_predictions,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_FPR",
    "EXACT_PERMUTATION_MAX",
    "TestResult",
    "Verdict",
    "check_predictions",
    "decide_sets",
    "null_threshold",
    "predict_controls",
    "predict_labels",
    "retention",
    "verify_predictions",
]
