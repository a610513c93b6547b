"""Score thresholds: the exact threshold sweep, F1-max, and fitting rules (docs/METHODS.md 4).

A fitted threshold is applied as `score > threshold` (anomalous), as in the GON reference
(`reconstruction_errors > threshold`). Curves and sweeps count `score >= t` at each unique
score; `f1_max` returns a threshold already converted to the `>` convention.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "threshold_sweep", "f1_max", "f1_from_sweep", "f1_optimal_threshold", "mean_std_threshold",
    "fit_threshold", "confusion_matrix", "as_finite_scores", "as_binary_labels",
]

RULES = ("auto", "f1", "mean_std")


def as_finite_scores(scores, name: str) -> np.ndarray:
    """Flattens scores to 1-D float (float32 stays float32 to spare memory); rejects NaN/inf."""
    s = np.asarray(scores)
    if not (np.issubdtype(s.dtype, np.floating) or np.issubdtype(s.dtype, np.integer)):
        raise ValueError(f"{name}: scores must be numeric; got dtype {s.dtype}")
    s = s.ravel() if np.issubdtype(s.dtype, np.floating) else s.ravel().astype(np.float64)
    if s.size == 0:
        raise ValueError(f"{name}: no scores given")
    if not np.all(np.isfinite(s)):
        bad = int(np.count_nonzero(~np.isfinite(s)))
        raise ValueError(f"{name}: {bad} of {s.size} scores are NaN or infinite (did the model diverge?)")
    return s


def as_binary_labels(labels, name: str, *, size: int | None = None) -> np.ndarray:
    """Flattens labels (bool or numbers in {0, 1}) to a 1-D bool array."""
    y = np.asarray(labels)
    if y.dtype != bool:
        if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer)):
            raise ValueError(f"{name}: labels must be bool or numbers in {{0, 1}}; got dtype {y.dtype}")
        ok = (y == 0) | (y == 1)
        if not np.all(ok):
            raise ValueError(f"{name}: labels must be 0 or 1; found {np.unique(y[~ok])[:5].tolist()} "
                             "(binarise masks with mask > 0.5 first)")
        y = y == 1
    y = y.ravel()
    if size is not None and y.size != size:
        raise ValueError(f"{name}: {y.size} labels for {size} scores")
    return y


def threshold_sweep(scores: np.ndarray, *weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """Cumulative weight sums at every unique threshold, highest threshold first.

    scores (n,), weights each (n,). Returns (thresholds (K,), cumsum_1 (K,), ...) where
    cumsum_j[i] = sum of weights_j over examples with score >= thresholds[i]. Bool
    weights are summed as exact integers. One O(n log n) sort serves every weight.
    """
    order = np.argsort(scores)[::-1]
    s = scores[order]
    # Last position of each group of tied scores: the curve only has a point there.
    ends = np.append(np.flatnonzero(s[1:] != s[:-1]), s.size - 1)
    sums = []
    for w in weights:
        w = w[order]
        total = np.cumsum(w, dtype=np.int64 if w.dtype == bool else np.float64)
        sums.append(total[ends])
    return (s[ends], *sums)


def f1_max(scores, labels, *, name: str = "F1-max") -> tuple[float, float]:
    """Best F1 over every unique threshold, and a threshold t reproducing it as score > t.

    t lies midway between the lowest score called anomalous and the highest score called
    normal (below the minimum when everything is called anomalous). Ties in F1 keep the
    highest threshold. Needs at least one anomalous label.
    """
    s = as_finite_scores(scores, name)
    y = as_binary_labels(labels, name, size=s.size)
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0:
        raise ValueError(f"{name} is undefined: no anomalous labels among {y.size}")
    return f1_from_sweep(*threshold_sweep(s, y, ~y))


def f1_from_sweep(thresholds: np.ndarray, tps: np.ndarray, fps: np.ndarray) -> tuple[float, float]:
    """`f1_max` from a `threshold_sweep(scores, labels, ~labels)` result (no second sort)."""
    f1 = 2 * tps / (tps + fps + tps[-1])
    best = int(np.argmax(f1))
    upper = float(thresholds[best])
    if best + 1 < thresholds.size:
        lower = float(thresholds[best + 1])
        t = lower + (upper - lower) / 2
        if not lower <= t < upper:  # adjacent floats: the midpoint rounds onto `upper`
            t = lower
    else:
        t = float(np.nextafter(upper, -np.inf))
    return float(f1[best]), t


def f1_optimal_threshold(scores, labels) -> float:
    """Threshold t (applied as score > t) maximising F1 on (scores, labels)."""
    return f1_max(scores, labels, name="F1-optimal threshold")[1]


def mean_std_threshold(normal_scores, k: float = 2.0) -> float:
    """mean + k * std of normal scores, population std (ddof=0, numpy's default).

    The GON reference rule: `np.mean(errors) + 2 * np.std(errors)`.
    """
    s = as_finite_scores(normal_scores, "mean_std threshold").astype(np.float64)
    return float(np.mean(s) + k * np.std(s))


def fit_threshold(val_scores, val_labels=None, rule: str = "auto", k: float = 2.0) -> tuple[float, str]:
    """Fits a threshold on validation data; returns (threshold, rule_used).

    rule 'auto' (docs/METHODS.md 4): 'f1' when the validation labels contain anomalies,
    otherwise 'mean_std' (mean + k * std of the validation normal scores). val_labels None
    means every validation score is normal. rule_used is 'f1' or 'mean_std'.
    """
    if rule not in RULES:
        raise ValueError(f"threshold rule must be one of {RULES}; got {rule!r}")
    s = as_finite_scores(val_scores, "validation scores")
    y = (np.zeros(s.size, dtype=bool) if val_labels is None
         else as_binary_labels(val_labels, "validation labels", size=s.size))
    has_anomalies = bool(np.any(y))
    if rule == "auto":
        rule = "f1" if has_anomalies else "mean_std"
    if rule == "f1":
        if not has_anomalies:
            raise ValueError("threshold rule 'f1' needs anomalous validation examples; the validation "
                             "split has none (use 'auto' or 'mean_std')")
        return f1_optimal_threshold(s, y), "f1"
    normal = s[~y]
    if normal.size == 0:
        raise ValueError("threshold rule 'mean_std' needs normal validation scores; all are anomalous")
    return mean_std_threshold(normal, k), "mean_std"


def confusion_matrix(scores, labels, threshold: float) -> dict[str, int]:
    """Counts tn, fp, fn, tp with prediction = score > threshold (anomalous = positive)."""
    s = as_finite_scores(scores, "confusion_matrix scores")
    y = as_binary_labels(labels, "confusion_matrix labels", size=s.size)
    if not np.isfinite(threshold):
        raise ValueError(f"confusion_matrix: threshold must be finite; got {threshold}")
    pred = s > threshold
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred & ~y))
    fn = int(np.count_nonzero(~pred & y))
    return {"tn": s.size - tp - fp - fn, "fp": fp, "fn": fn, "tp": tp}
