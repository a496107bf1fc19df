"""Training plots for output folders (matplotlib, the `plots` extra)."""

from pathlib import Path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("Plots need matplotlib: `pip install hf-heads[plots]`.") from error
    return plt


def plot_loss_curves(log_history: list[dict], path: Path) -> Path:
    """Train and validation loss against the optimizer step, from `Trainer.state.log_history`."""
    plt = _pyplot()
    train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]
    evaluation = [(entry["step"], entry["eval_loss"]) for entry in log_history if "eval_loss" in entry]
    figure, axes = plt.subplots(figsize=(6, 4))
    for points, label, style in ((train, "train", "-"), (evaluation, "validation", "o-")):
        if points:
            axes.plot(*zip(*points), style, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    if train or evaluation:
        axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def plot_confusion_matrix(matrix, labels: list[str], path: Path) -> Path:
    """Counts of (true label, predicted label), annotated."""
    plt = _pyplot()
    size = max(4, 0.6 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels=labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels=labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            axes.text(j, i, str(int(count)), ha="center", va="center", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
