"""Model cards with Hub metadata (`huggingface_hub.ModelCard`) for the recipes' output folders."""

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData


TASK_NAMES = {"text-classification": "Text Classification", "text-generation": "Text Generation"}


def write_model_card(
    output_dir: Path,
    *,
    model_name: str,
    pipeline_tag: str,
    model_type: str,
    dataset_name: str,
    metrics: dict[str, float],
    hyperparameters: dict,
    base_model: str | None = None,
    images: dict[str, str] | None = None,
    description: str = "",
) -> ModelCard:
    """
    Writes `README.md` in `output_dir`: metadata the Hub understands (library, pipeline tag, tags, dataset, base model,
    results in model-index form), then the results, hyperparameters, plots and how to load the model.
    `metrics` maps a metric name ("accuracy", "f1", "perplexity", ...) to its value on `dataset_name`'s test split.
    """
    eval_results = [
        EvalResult(
            task_type=pipeline_tag, task_name=TASK_NAMES.get(pipeline_tag, pipeline_tag), dataset_type=dataset_name,
            dataset_name=dataset_name, dataset_split="test", metric_type=name, metric_name=name, metric_value=value,
        )
        for name, value in metrics.items()
    ]
    data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=["hf-heads", model_type, "custom_code"],
        datasets=[dataset_name],
        base_model=base_model,
        metrics=list(metrics),
        eval_results=eval_results,
    )
    auto_class = "AutoModelForSequenceClassification" if pipeline_tag == "text-classification" else "AutoModelForCausalLM"
    results = "\n".join(f"| {name} | {value:.4f} |" for name, value in metrics.items())
    settings = "\n".join(f"| `{name}` | `{value}` |" for name, value in sorted(hyperparameters.items()))
    pictures = "\n".join(f"![{title}]({file})" for title, file in (images or {}).items())
    body = f"""
# {model_name}

A `{model_type}` model trained with the `hf-heads` recipes{f" from `{base_model}`" if base_model else ""} on
`{dataset_name}`. {description}

## Results (test split)

| metric | value |
|---|---|
{results}

{pictures}

## How to load

```python
from transformers import AutoTokenizer, {auto_class}, pipeline

model = {auto_class}.from_pretrained("<this folder or repo id>", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("<this folder or repo id>", trust_remote_code=True)
pipe = pipeline("{pipeline_tag}", model=model, tokenizer=tokenizer)
```

The modelling code travels with the weights (`trust_remote_code=True`); with `pip install hf-heads` and
`import hf_heads`, the classes load without it.

## Training hyperparameters

| argument | value |
|---|---|
{settings}
"""
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
    card.save(Path(output_dir) / "README.md")
    return card
