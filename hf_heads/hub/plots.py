"""The pictures an output folder ships (matplotlib, the `plots` extra): each has a title, named axes and a legend where
there is more than one series, and stays legible at the size the Hub shows it."""

from pathlib import Path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("Plots need matplotlib: `pip install hf-heads[plots]`.") from error
    return plt


def _save(figure, path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    _pyplot().close(figure)
    return Path(path)


def plot_loss_curves(log_history: list[dict], path, title: str = "Loss") -> Path:
    """
    Training and validation loss against the optimizer step, from `Trainer.state.log_history`. Every logged point is
    marked, so a short run (a handful of logs) still shows its points; a run that logged nothing says so on the plot.
    """
    plt = _pyplot()
    train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]
    validation = [(entry["step"], entry["eval_loss"]) for entry in log_history if "eval_loss" in entry]
    figure, axes = plt.subplots(figsize=(7, 4.2))
    if train:
        axes.plot(*zip(*train), "-", marker="." if len(train) > 30 else "o", markersize=4, label="training")
    if validation:
        axes.plot(*zip(*validation), "s--", markersize=6, label="validation")
    if train or validation:
        axes.legend()
    else:
        axes.text(0.5, 0.5, "no loss was logged\n(`--logging_steps` larger than the run)", ha="center", va="center",
                  transform=axes.transAxes)
    axes.set_title(title)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_confusion_matrix(matrix, labels: list[str], path, title: str = "Confusion matrix") -> Path:
    """Counts of (true label, predicted label), each cell annotated."""
    plt = _pyplot()
    size = max(4.5, 0.6 * len(labels) + 2.5)
    figure, axes = plt.subplots(figsize=(size, size))
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels=labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels=labels)
    axes.set_xlabel("predicted label")
    axes.set_ylabel("true label")
    axes.set_title(title)
    threshold = max(max(row) for row in matrix) / 2 if len(matrix) else 0
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            axes.text(j, i, str(int(count)), ha="center", va="center", fontsize=8,
                      color="white" if count > threshold else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="texts")
    return _save(figure, path)


def normalised_axis_name(model) -> str:
    """What the model's GAAM layers normalise along, in words a reader of the heatmap understands."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) == "headed":
        # "daam" gates the layers' states without the embeddings (the authors read `hidden_states[1:]`).
        return "backbone layer (1 = first layer)" if config.head_type == "daam" else "backbone layer (0 = embeddings)"
    axis = getattr(config, "gaam_norm_axis", None)
    return {"sequence": "token position", "features": "hidden feature"}.get(axis, "position along the normalised axis")


def _short_layer_name(name: str) -> str:
    """`transformer.h.3.attn.gaam` -> `block 3`; names without a block number are kept."""
    parts = name.split(".")
    for index, part in enumerate(parts[:-1]):
        if part == "h" and parts[index + 1].isdigit():
            return f"block {parts[index + 1]}"
    return name


def plot_importance_heatmap(factors, path, axis_name: str, title: str = "GAAM Importance Factor") -> Path:
    """
    The Importance Factor of each GAAM layer (`hf_heads.importance_factors`), one row per layer, along the axis the
    layer normalises (`axis_name`, e.g. `normalised_axis_name(model)`). The figure has a fixed, legible size whatever
    the axis length; a short axis (backbone layers) gets a tick and its value in every cell.
    """
    import torch

    plt = _pyplot()
    width = max(factor.shape[0] for factor in factors.factors)
    grid = torch.full((len(factors.factors), width), float("nan"))
    for row, factor in enumerate(factors.factors):
        grid[row, : factor.shape[0]] = factor
    rows = len(factors.names)
    figure, axes = plt.subplots(figsize=(8, max(2.8, 1.6 + 0.45 * rows)))
    image = axes.imshow(grid.numpy(), aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_yticks(range(rows), labels=[_short_layer_name(name) for name in factors.names])
    if width <= 24:
        axes.set_xticks(range(width))
        for row in range(rows):
            for column in range(width):
                value = grid[row, column].item()
                if value == value:  # not NaN
                    axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8,
                              color="black" if value > 0.6 else "white")
    axes.set_xlabel(axis_name)
    axes.set_ylabel("GAAM layer")
    axes.set_title(f"{title} across {axis_name.split(' (')[0]}s")
    figure.colorbar(image, ax=axes, label="IF (per layer: 0 least, 1 most)")
    return _save(figure, path)


def plot_search_trials(
    rows: list[dict], metric: str, parameters: list[str], path, greater_is_better: bool = True
) -> Path:
    """
    One bar per trial of a hyperparameter search, labelled with the trial's parameter values, its metric written at the
    bar's end; the best trial is highlighted, pruned or failed trials are grey (their last reported value, if any).
    """
    plt = _pyplot()
    scored = [row for row in rows if row.get(metric) is not None]
    complete = [row for row in scored if row.get("state", "complete") == "complete"]
    best = (max if greater_is_better else min)(complete, key=lambda row: row[metric]) if complete else None
    labels = [
        f"#{row['trial']}  " + ", ".join(f"{name}={_format(row.get(name))}" for name in parameters) for row in scored
    ]
    figure, axes = plt.subplots(figsize=(10, max(3, 1.6 + 0.4 * len(scored))))
    colours = ["tab:orange" if row is best else "tab:blue" if row.get("state", "complete") == "complete" else
               "tab:gray" for row in scored]
    positions = range(len(scored))
    axes.barh(positions, [row[metric] for row in scored], color=colours)
    axes.set_yticks(positions, labels=labels, fontsize=8)
    axes.invert_yaxis()  # trial order, top to bottom
    for position, row in zip(positions, scored):
        axes.text(row[metric], position, f" {row[metric]:.4g}", va="center", fontsize=8)
    low = min(row[metric] for row in scored) if scored else 0
    high = max(row[metric] for row in scored) if scored else 1
    span = (high - low) or abs(high) or 1
    axes.set_xlim(low - 0.5 * span if low >= 0 and low - 0.5 * span > 0 else min(0, low), high + 0.25 * span)
    axes.set_xlabel(metric + (" (higher is better)" if greater_is_better else " (lower is better)"))
    axes.set_title(f"Hyperparameter search: {metric} per trial")
    from matplotlib.patches import Patch

    legend = [Patch(color="tab:orange", label="best"), Patch(color="tab:blue", label="complete")]
    if any(row.get("state", "complete") != "complete" for row in scored):
        legend.append(Patch(color="tab:gray", label="pruned or failed"))
    axes.legend(handles=legend, loc="lower right", fontsize=8)
    return _save(figure, path)


def _format(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
