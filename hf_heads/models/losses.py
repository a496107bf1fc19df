"""The classification losses of every model in this package, with transformers' rules.

This file depends on torch alone: each model folder links to it, so a folder saved for `trust_remote_code=True`
carries it beside the modelling code.
"""

import torch
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss


PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, config, num_labels: int) -> torch.Tensor:
    """
    The loss of a sequence classifier, as transformers' own sequence classifiers compute it: `config.problem_type`
    decides; when it is None it is inferred and recorded in `config` (one label: regression; integer labels:
    single-label classification; otherwise multi-label), so the saved configuration says what was trained.
    """
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    labels = labels.to(logits.device)
    if config.problem_type == "regression":
        if num_labels == 1:
            return MSELoss()(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return MSELoss()(logits, labels.to(logits.dtype))
    if config.problem_type == "single_label_classification":
        return CrossEntropyLoss()(logits.view(-1, num_labels), labels.view(-1))
    if config.problem_type == "multi_label_classification":
        return BCEWithLogitsLoss()(logits, labels.to(logits.dtype))
    accepted = ", ".join(map(repr, PROBLEM_TYPES))
    raise ValueError(f"`problem_type`={config.problem_type!r} is not supported; accepted values: {accepted}.")


def token_classification_loss(logits: torch.Tensor, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Cross-entropy over every labelled token (label -100 marks tokens without one, as transformers' collators do)."""
    return CrossEntropyLoss()(logits.view(-1, num_labels).float(), labels.view(-1).to(logits.device))


__all__ = ["classification_loss", "token_classification_loss"]
