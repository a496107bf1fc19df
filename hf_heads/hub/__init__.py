"""What a Hub-ready output folder holds beyond weights and code: a model card and plots."""

from .model_card import write_model_card
from .plots import plot_confusion_matrix, plot_loss_curves


__all__ = ["plot_confusion_matrix", "plot_loss_curves", "write_model_card"]
