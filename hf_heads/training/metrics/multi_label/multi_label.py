"""Multi-label classification: micro- and macro-averaged F1 of 0/1 predictions (probability > 0.5)."""

import datasets
import evaluate
from sklearn.metrics import f1_score


class MultiLabel(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Micro- and macro-averaged F1 over labels; a label counts as predicted when its probability "
            "exceeds 0.5.",
            citation="",
            inputs_description="predictions, references: one 0/1 value per label (lists of int).",
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Value("int64")),
                "references": datasets.Sequence(datasets.Value("int64")),
            }),
        )

    def _compute(self, predictions, references):
        return {
            "micro_f1": float(f1_score(references, predictions, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(references, predictions, average="macro", zero_division=0)),
        }
