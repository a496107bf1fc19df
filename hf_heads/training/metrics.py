"""Classification metrics computed locally (no metric scripts downloaded from the Hub)."""

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def classification_metrics(eval_prediction) -> dict[str, float]:
    """`compute_metrics` for `Trainer`: accuracy and macro-F1 of the arg-max predictions."""
    logits, labels = eval_prediction.predictions, eval_prediction.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    predictions = np.asarray(logits).argmax(-1)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, average="macro")),
    }
