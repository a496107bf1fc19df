"""What a Hub-ready output folder holds beyond weights and code: a model card (written through `Trainer`'s card hook)
and pictures."""

from .model_card import build_model_card, is_hub_id, write_model_card
from .plots import (
    normalised_axis_name,
    plot_confusion_matrix,
    plot_importance_heatmap,
    plot_loss_curves,
    plot_search_trials,
)
from .trainer_card import CardSettings, check_hub_strategy, use_model_card, write_trainer_card


__all__ = [
    "CardSettings",
    "build_model_card",
    "check_hub_strategy",
    "is_hub_id",
    "normalised_axis_name",
    "plot_confusion_matrix",
    "plot_importance_heatmap",
    "plot_loss_curves",
    "plot_search_trials",
    "use_model_card",
    "write_model_card",
    "write_trainer_card",
]
