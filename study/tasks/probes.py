"""Structure scores of hidden states: linear probes, cluster scores, representation equivalence.

Pure functions of arrays (``states`` is Float [N, d], one hidden state per input); the
tasks decide which states to read and which labels they should carry.

- :func:`probe_accuracy`: a linear probe fitted on one set of states and scored on
  others, e.g. fitted on ID inputs and applied to OOD ones (Alain & Bengio,
  "Understanding intermediate layers using linear classifier probes", 2016).  The
  probe is linear discriminant analysis (a shared, Ledoit-Wolf shrunk covariance) on
  standardized states: closed form, so its cost is one small linear solve, 20-30x
  less than a logistic regression fitted by L-BFGS on the same states, and on the
  hidden states of trained adders it is as accurate (a least-squares classifier is
  not: it loses ~8 points on ten clustered classes).
- :func:`cluster_score`: the silhouette of the states grouped by a label (Rousseeuw,
  1987): 1 for tight, well separated clusters, about 0 for unstructured states.
- :func:`equivalence_rate`: the share of OOD states nearer the state of their own ID
  equivalent than that state is to any ID state with another answer digit, the
  representation-level version of the equivalence of answers f(a mod 10^n, b mod 10^n)
  (Xu et al., arXiv 2308.08268);
  :func:`nearest_label_rate`: the share whose nearest ID state carries their
  equivalent's label (the same question asked of classes instead of inputs).
- :func:`attention_shares`, :func:`alignment_scores`, :func:`most_attended`: where attention
  goes from a token of interest, by groups of keys (e.g. operand digits by significance).
- :func:`coefficient_r2`: a ridge probe from states to the coefficients of a prompt's
  linear function, scored by R^2 (in-context regression, Garg et al. 2022).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score, silhouette_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

RIDGE_ALPHA = 1.0  # L2 strength of the coefficient probe


def held_out_split(n: int, test_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) of a seeded random split of range(n); the test part
    has round(test_share * n) items, at least 1 and at most n - 1 when n >= 2."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(max(round(test_share * n), 1), n - 1) if n >= 2 else 0
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def probe_accuracy(
    train_states: np.ndarray, train_labels: np.ndarray, tests: list[tuple[np.ndarray, np.ndarray]]
) -> list[float]:
    """Accuracy of a linear probe fitted on (train_states [N, d], train_labels [N]) on each
    (states [M, d], labels [M]) of ``tests``.

    A label the probe never saw counts as wrong.  When the training labels take a single
    value the probe is that constant; an empty test set scores NaN.
    """
    train_labels = np.asarray(train_labels)
    classes = np.unique(train_labels)
    if len(classes) == 1:
        predict = lambda states: np.full(len(states), classes[0])  # noqa: E731
    else:
        probe = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"))
        with warnings.catch_warnings():  # a label seen once still has a mean; the covariance is shared
            warnings.filterwarnings("ignore", message="Only one sample available")
            probe.fit(np.asarray(train_states, dtype=np.float64), train_labels)
        predict = lambda states: probe.predict(np.asarray(states, dtype=np.float64))  # noqa: E731
    scores = []
    for states, labels in tests:
        if len(labels) == 0:
            scores.append(float("nan"))
            continue
        scores.append(float(np.mean(predict(states) == np.asarray(labels))))
    return scores


def cluster_score(states: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette of ``states`` [N, d] grouped by ``labels`` [N] (Euclidean), in [-1, 1].

    1: every state is much nearer its own label's states than any other label's;
    about 0: labels unrelated to the geometry.  NaN unless 2 <= distinct labels < N.
    """
    labels = np.asarray(labels)
    n_labels = len(np.unique(labels))
    if not 2 <= n_labels < len(labels):
        return float("nan")
    return float(silhouette_score(np.asarray(states, dtype=np.float64), labels))


def equivalence_rate(
    ood_states: np.ndarray,
    equivalent_states: np.ndarray,
    equivalent_labels: np.ndarray,
    reference_states: np.ndarray,
    reference_labels: np.ndarray,
) -> float:
    """Share of OOD states that lie nearer the state of their ID equivalent than that state
    lies to any reference ID state with a different label (Euclidean, strictly).

    ood_states [M, d] and equivalent_states [M, d]: each OOD input's state and its ID
    equivalent's (row by row); equivalent_labels [M]: the equivalent's label (e.g. answer digit
    i); reference_states [R, d], reference_labels [R]: states of ID inputs.  The radius around
    an equivalent is its distance to the nearest reference with another label, so an OOD state
    counts when the model would not tell it from its equivalent at the resolution that
    separates answers.  Why not "nearest to its equivalent among all ID states": an OOD input
    shares every token but its extra digits with its equivalent, so even a random network puts
    the two close (measured at initialization: 0.2-0.45 of nano adders' OOD states pass that
    test, against 1/770 chance), while a trained one legitimately puts other ID inputs with
    the same answer digit as close.  This version is ~0 at initialization (a random map moves
    a state by more for two changed tokens than the gaps between densely sampled ID states)
    and ~0 for unrelated states.  NaN for M = 0 or when no reference has another label.
    """
    if len(ood_states) == 0:
        return float("nan")
    ood = np.asarray(ood_states, dtype=np.float64)
    eq = np.asarray(equivalent_states, dtype=np.float64)
    ref = np.asarray(reference_states, dtype=np.float64)
    own = ((ood - eq) ** 2).sum(1)  # [M]
    d2 = (eq**2).sum(1)[:, None] - 2.0 * eq @ ref.T + (ref**2).sum(1)[None, :]  # [M, R]
    other = np.asarray(reference_labels)[None, :] != np.asarray(equivalent_labels)[:, None]
    if not other.any():
        return float("nan")
    radius = np.where(other, d2, np.inf).min(1)
    return float(np.mean(own < radius))


def nearest_label_rate(
    ood_states: np.ndarray, ood_labels: np.ndarray, reference_states: np.ndarray, reference_labels: np.ndarray
) -> float:
    """Share of OOD states whose nearest reference state (Euclidean) carries the same label,
    e.g. the answer digit of the OOD input's ID equivalent: a nearest-neighbour probe fitted on
    nothing but the ID states.  Unrelated states score the label frequencies' overlap (0.1 for
    ten balanced digits).  NaN for no OOD state."""
    if len(ood_states) == 0:
        return float("nan")
    ood = np.asarray(ood_states, dtype=np.float64)
    ref = np.asarray(reference_states, dtype=np.float64)
    d2 = (ood**2).sum(1)[:, None] - 2.0 * ood @ ref.T + (ref**2).sum(1)[None, :]
    return float(np.mean(np.asarray(reference_labels)[d2.argmin(1)] == np.asarray(ood_labels)))


def coefficient_r2(
    train_states: np.ndarray, train_coefficients: np.ndarray, tests: list[tuple[np.ndarray, np.ndarray]]
) -> list[float]:
    """R^2 of a ridge probe from states [N, d] to coefficients [N, c], on each test
    (states [M, d], coefficients [M, c]): 1 - residual / total sum of squares, averaged
    over the c coefficients (scikit-learn's ``r2_score``).  1: the states hold the
    coefficients linearly; <= 0: no better than their mean.  NaN for fewer than 2 rows."""
    probe = make_pipeline(StandardScaler(), Ridge(alpha=RIDGE_ALPHA))
    probe.fit(np.asarray(train_states, dtype=np.float64), np.asarray(train_coefficients, dtype=np.float64))
    scores = []
    for states, coefficients in tests:
        if len(states) < 2:
            scores.append(float("nan"))
            continue
        predicted = probe.predict(np.asarray(states, dtype=np.float64))
        scores.append(float(r2_score(np.asarray(coefficients, dtype=np.float64), predicted)))
    return scores


def attention_shares(
    query_weights: np.ndarray, key_groups: np.ndarray, n_groups: int, present: np.ndarray | None = None
) -> np.ndarray:
    """How each query spreads its attention over groups of keys: Float [N, H, I, S].

    query_weights [N, H, I, T]: the attention rows of I queries of interest in each of N
    sequences (e.g. from the token that predicts answer digit i), per head, over T keys;
    key_groups [N, T]: the group of each key (e.g. an operand digit's significance s in
    0..S-1), -1 for keys in no group; present [N, I]: whether sequence n has query i.
    shares[n, h, i, s] is the attention that head h sends from query i to the keys of group s;
    NaN where sequence n has no key of group s or no query i.
    """
    rows = np.asarray(query_weights, dtype=np.float64)
    groups = np.asarray(key_groups)[..., None] == np.arange(n_groups)  # [N, T, S]
    shares = np.einsum("nhit,nts->nhis", rows, groups.astype(np.float64))
    missing = ~groups.any(1)[:, None, None, :]
    if present is not None:
        missing = missing | ~np.asarray(present, dtype=bool)[:, None, :, None]
    return np.where(missing, np.nan, shares)


def alignment_scores(shares: np.ndarray, targets: list[int]) -> np.ndarray:
    """Float [H, I]: the mean over sequences of the share each head sends from query i to
    group targets[i] (of :func:`attention_shares`), skipping NaN; NaN when none has it."""
    picked = np.stack([shares[:, :, i, s] for i, s in enumerate(targets)], axis=-1)  # [N, H, I]
    return _nanmean(picked, axis=0)


def most_attended(shares: np.ndarray) -> np.ndarray:
    """Float [H, I]: the group with the largest mean share (over sequences, skipping NaN) per
    head and query; NaN where no group was ever present."""
    mean = _nanmean(shares, axis=0)  # [H, I, S]
    empty = np.isnan(mean).all(-1)
    return np.where(empty, np.nan, np.nanargmax(np.where(np.isnan(mean), -np.inf, mean), axis=-1).astype(float))


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    counts = (~np.isnan(x)).sum(axis)
    total = np.nansum(x, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, total / counts, np.nan)
