"""
The recipes' metrics, shipped as local `evaluate` modules and loaded by path the way Hugging Face users load metrics
(`evaluate.load(...)`), so they work offline: `single_label` (accuracy, macro-F1, confusion matrix), `multi_label`
(micro- and macro-F1 at a 0.5 probability threshold) and `regression` (MSE, MAE, Pearson r).
"""

from pathlib import Path

import numpy as np


METRICS_FOLDER = Path(__file__).resolve().parent
MODULE_OF_PROBLEM = {
    "single_label_classification": "single_label",
    "multi_label_classification": "multi_label",
    "regression": "regression",
}


def load_metric(name: str):
    """One of the package's metrics (`single_label`, `multi_label`, `regression`) as an `evaluate` module."""
    import evaluate

    if name not in MODULE_OF_PROBLEM.values():
        raise ValueError(f"metric {name!r} is not shipped; accepted: {', '.join(MODULE_OF_PROBLEM.values())}.")
    return evaluate.load(str(METRICS_FOLDER / name))


def predictions_for(problem_type: str, logits: np.ndarray) -> np.ndarray:
    """What the model predicts from its logits: a class id, a set of labels (probability > 0.5), or a number."""
    if problem_type == "multi_label_classification":
        return (logits > 0).astype(np.int64)  # sigmoid(logit) > 0.5
    if problem_type == "regression":
        return logits.reshape(-1)
    return logits.argmax(-1)


def compute_metrics_for(problem_type: str):
    """`compute_metrics` for `Trainer` on this problem type."""
    metric = load_metric(MODULE_OF_PROBLEM[problem_type])

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        logits = np.asarray(logits[0] if isinstance(logits, tuple) else logits)
        references = np.asarray(eval_prediction.label_ids)
        if problem_type == "multi_label_classification":
            references = references.astype(np.int64)
        return metric.compute(predictions=predictions_for(problem_type, logits), references=references)

    return compute_metrics


def classification_metrics(eval_prediction) -> dict[str, float]:
    """`compute_metrics` for single-label classifiers: accuracy and macro-F1 of the arg-max predictions."""
    return compute_metrics_for("single_label_classification")(eval_prediction)
