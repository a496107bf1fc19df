"""Single-label classification: accuracy, macro-F1 and (on request) the confusion matrix."""

import datasets
import evaluate
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


class SingleLabel(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Accuracy and macro-averaged F1 of class predictions; `confusion_matrix=True` adds the matrix "
            "(rows: references, columns: predictions, over `num_labels` classes).",
            citation="",
            inputs_description="predictions, references: class ids (int).",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, confusion_matrix_labels=None):
        result = {
            "accuracy": float(accuracy_score(references, predictions)),
            "macro_f1": float(f1_score(references, predictions, average="macro")),
        }
        if confusion_matrix_labels is not None:
            result["confusion_matrix"] = confusion_matrix(
                references, predictions, labels=list(range(confusion_matrix_labels))
            ).tolist()
        return result
