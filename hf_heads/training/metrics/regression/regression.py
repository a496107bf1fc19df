"""Regression: mean squared error, mean absolute error and Pearson's r."""

import datasets
import evaluate
import numpy as np


class Regression(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Mean squared error, mean absolute error and Pearson correlation of predicted numbers.",
            citation="",
            inputs_description="predictions, references: numbers (float).",
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        predictions, references = np.asarray(predictions), np.asarray(references)
        errors = predictions - references
        # Pearson r is undefined when either side is constant (a model that predicts one value): reported as 0.
        constant = predictions.std() == 0 or references.std() == 0
        return {
            "mse": float(np.mean(errors**2)),
            "mae": float(np.mean(np.abs(errors))),
            "pearson_r": 0.0 if constant else float(np.corrcoef(predictions, references)[0, 1]),
        }
