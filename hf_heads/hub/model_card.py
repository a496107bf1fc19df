"""Model cards with Hub metadata (`huggingface_hub.ModelCard`) for the package's output folders.

The metadata is built with `huggingface_hub`'s own `ModelCardData` / `EvalResult`, so what the Hub reads is what the
library writes: results name the split they were measured on, metric names say what they are ("macro-F1", not "f1"),
`base_model` is set only when it is a Hub id (a local path means nothing to a reader), settings are written as users
type them (`cosine`, not `SchedulerType.COSINE`).
"""

import enum
import os
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id


TASK_NAMES = {
    "text-classification": "Text Classification",
    "text-generation": "Text Generation",
    "token-classification": "Token Classification",
    "question-answering": "Question Answering",
}
AUTO_CLASSES = {
    "text-classification": "AutoModelForSequenceClassification",
    "text-generation": "AutoModelForCausalLM",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
}
# Metric key (as the recipes log it) -> (metric type the Hub indexes, name shown to readers).
METRICS = {
    "accuracy": ("accuracy", "accuracy"),
    "macro_f1": ("f1", "macro-F1"),
    "micro_f1": ("f1", "micro-F1"),
    "loss": ("loss", "loss"),
    "perplexity": ("perplexity", "perplexity"),
    "bits_per_character": ("bits_per_character", "bits per character"),
    "mse": ("mse", "mean squared error"),
    "mae": ("mae", "mean absolute error"),
    "pearson_r": ("pearsonr", "Pearson r"),
}


def check_license(license: str | None) -> None:
    """A Hub license identifier is lower case (`apache-2.0`, `mit`, `cc-by-4.0`, `other`); the Hub refuses others at
    upload time, after training, so they are refused here."""
    if license is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", license):
        raise ValueError(
            f"`--license`={license!r} is not a Hub license identifier; use the Hub's lower-case ids, e.g. apache-2.0, "
            "mit, cc-by-4.0, or other."
        )


def is_hub_id(name: str | None) -> bool:
    """Whether `name` reads as a Hub repo id (`user/model` or `model`) rather than a folder on this machine."""
    if not name or os.path.exists(name) or name.startswith((".", "/", "~")) or os.sep in name.replace("/", "", 1):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def plain(value):
    """A setting as a user would type it: enum members by their value, paths as strings."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


def metric_label(key: str) -> tuple[str, str]:
    return METRICS.get(key, (key, key.replace("_", " ")))


def build_model_card(
    *,
    model_name: str,
    pipeline_tag: str,
    model_type: str,
    dataset_name: str,
    results: dict[str, dict[str, float]],
    splits: dict[str, str] | None = None,
    hyperparameters: dict | None = None,
    base_model: str | None = None,
    license: str | None = None,
    images: dict[str, str] | None = None,
    remote_code: bool = True,
    tags: list[str] | None = None,
    description: str = "",
    data_notes: str = "",
    sections: dict[str, str] | None = None,
) -> ModelCard:
    """
    The card for a trained model. `results` maps a split name ("test", "validation", ...) to the metrics measured on
    it (keys as logged: "accuracy", "macro_f1", "loss", ...); `splits` says what each split is (where it came from, how
    many rows), so a carved validation split or an LM's held-out blocks are named for what they are; `data_notes`
    says how the splits were made; `sections` (title -> markdown) follow the pictures.
    """
    check_license(license)
    eval_results = [
        EvalResult(
            task_type=pipeline_tag, task_name=TASK_NAMES.get(pipeline_tag, pipeline_tag), dataset_type=dataset_name,
            dataset_name=dataset_name, dataset_split=split, metric_type=metric_label(key)[0],
            metric_name=metric_label(key)[1], metric_value=float(value),
        )
        for split, metrics in results.items()
        for key, value in metrics.items()
    ]
    hub_base = base_model if is_hub_id(base_model) else None
    data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        license=license,
        tags=sorted({"hf-heads", model_type, *(["custom_code"] if remote_code else []), *(tags or [])}),
        datasets=[dataset_name] if is_hub_id(dataset_name) else None,
        base_model=hub_base,
        metrics=sorted({metric_label(key)[0] for metrics in results.values() for key in metrics}) or None,
        eval_results=eval_results or None,
    )
    origin = ""
    if hub_base:
        origin = f" from [`{hub_base}`](https://huggingface.co/{hub_base})"
    elif base_model:
        origin = f" from a local checkpoint (`{Path(base_model).name}`)"
    table = "\n".join(
        f"| {split} | {metric_label(key)[1]} | {float(value):.4f} |"
        for split, metrics in results.items() for key, value in metrics.items()
    )
    split_lines = "\n".join(f"- **{split}**: {text}" for split, text in (splits or {}).items())
    data_section = "\n\n".join(part for part in (data_notes, split_lines) if part)
    settings = "\n".join(f"| `{name}` | `{plain(value)}` |" for name, value in sorted((hyperparameters or {}).items()))
    pictures = "\n\n".join(
        [f"### {title}\n\n![{title}]({file})" for title, file in (images or {}).items()]
        + [f"### {title}\n\n{text}" for title, text in (sections or {}).items()]
    )
    auto_class = AUTO_CLASSES.get(pipeline_tag, "AutoModel")
    remote = ", trust_remote_code=True" if remote_code else ""
    body = f"""
# {model_name}

A `{model_type}` model trained with [hf-heads](https://pypi.org/project/hf-heads/){origin} on `{dataset_name}`.
{description}

## Results

| split | metric | value |
|---|---|---|
{table or "| - | - | - |"}

{"## Data" + chr(10) + chr(10) + data_section if data_section else ""}

{"## Training curves and diagnostics" + chr(10) + chr(10) + pictures if pictures else ""}

## How to load

```python
from transformers import AutoTokenizer, {auto_class}, pipeline

model = {auto_class}.from_pretrained("<this folder or repo id>"{remote})
tokenizer = AutoTokenizer.from_pretrained("<this folder or repo id>"{remote})
pipe = pipeline("{pipeline_tag}", model=model, tokenizer=tokenizer)
```
{_remote_code_note(remote_code)}
## Training hyperparameters

| argument | value |
|---|---|
{settings}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _remote_code_note(remote_code: bool) -> str:
    if not remote_code:
        return ""
    return (
        "\nThe modelling code travels with the weights (`trust_remote_code=True`); with `pip install hf-heads` and "
        "`import hf_heads`, the classes load without it.\n"
    )


def write_model_card(output_dir, **card_fields) -> ModelCard:
    """`build_model_card(**card_fields)` saved as `README.md` in `output_dir`."""
    card = build_model_card(**card_fields)
    card.save(Path(output_dir) / "README.md")
    return card
