"""Classification metrics from true and predicted class indices: plain numbers, no printing."""

from __future__ import annotations

from collections.abc import Sequence


def classification_report(truth: Sequence[int], predicted: Sequence[int], labels: Sequence[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support, macro F1 and the confusion matrix.

    confusion_matrix[i][j] counts samples of true class i predicted as class j.
    """
    size = len(labels)
    matrix = [[0] * size for _ in range(size)]
    for true, guess in zip(truth, predicted):
        matrix[true][guess] += 1
    n = len(truth)
    correct = sum(matrix[i][i] for i in range(size))
    per_class = {}
    for i, label in enumerate(labels):
        true_positive = matrix[i][i]
        predicted_count = sum(matrix[j][i] for j in range(size))
        support = sum(matrix[i])
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": round(precision, 4), "recall": round(recall, 4),
                            "f1": round(f1, 4), "support": support}
    present = [scores["f1"] for scores in per_class.values() if scores["support"]]
    return {
        "n": n,
        "accuracy": round(correct / n, 4) if n else 0.0,
        "macro_f1": round(sum(present) / len(present), 4) if present else 0.0,
        "per_class": per_class,
        "labels": list(labels),
        "confusion_matrix": matrix,
    }
