"""Hyperparameter search over a recipe with `Trainer.hyperparameter_search` (optuna): grid, random or TPE (Bayesian).

    hf-heads-search recipes/configs/bbc_news_gaam_search.yaml
    python recipes/search.py recipes/configs/bbc_news_gaam_search.yaml

The YAML file names the recipe, the sampler and the search space, and holds the recipe's own arguments:

    recipe: train_classifier          # or pretrain_lm
    sampler: grid                     # grid | random | tpe
    n_trials: 8                       # random / tpe (a grid runs every point)
    metric: eval_accuracy             # eval_accuracy (default), eval_macro_f1, eval_loss; LM: eval_loss
    direction: maximize               # default: minimize for losses, maximize otherwise
    pruner: median                    # none | median: stop trials that are worse than the median so far
    space:
      gaam_num_heads: [2, 4]                          # a list: the values to try
      gaam_num_gaussians,gaam_num_heads: [[5, 4], [10, 8]]   # parameters that move together
      learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}   # a range (random / tpe)
    arguments:                        # the recipe's arguments, as in its own YAML file
      model_type: gaam_gpt2
      output_dir: runs/search
      ...

A space parameter is a `TrainingArguments` field or a field of the model's configuration (set through
`config_overrides` for each trial). Writes to `output_dir`: `search_results.csv` and `search_results.md` (one row per
trial: its parameters, the metric, its state, wall time), `search_results.png`, the optuna study
(`search.db`), and the best trial's model in `best_model/`.
"""

import argparse
import csv
import dataclasses
import json
import math
import shutil
from pathlib import Path

import yaml
from transformers import TrainerCallback, TrainingArguments, set_seed

from ..hub import plot_search_trials
from .arguments import unknown_names_message
from .classification import ClassifierRecipe
from .errors import MissingFileError, RecipeError, run_from_command_line
from .language_modeling import LanguageModelRecipe
from .outputs import print_output_folder


RECIPES = {"train_classifier": ClassifierRecipe, "pretrain_lm": LanguageModelRecipe}
SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("none", "median")
SEARCH_KEYS = ("recipe", "sampler", "n_trials", "metric", "direction", "pruner", "seed", "space", "arguments")


@dataclasses.dataclass
class SearchSettings:
    recipe: str
    sampler: str
    space: dict
    arguments: dict
    n_trials: int | None = None
    metric: str | None = None
    direction: str | None = None
    pruner: str = "median"
    seed: int = 0


def read_settings(path: str) -> SearchSettings:
    """The search file, every field checked before any data is read."""
    if not Path(path).is_file():
        raise MissingFileError(f"search file {path!r} does not exist.")
    raw = yaml.safe_load(Path(path).read_text()) or {}
    unknown = sorted(set(raw) - set(SEARCH_KEYS))
    if unknown:
        raise RecipeError(unknown_names_message(f"key in search file {path}", unknown, list(SEARCH_KEYS), "key"))
    missing = [key for key in ("recipe", "sampler", "space", "arguments") if key not in raw]
    if missing:
        raise RecipeError(f"the search file needs {', '.join(missing)}.")
    settings = SearchSettings(**raw)
    if settings.recipe not in RECIPES:
        raise RecipeError(f"`recipe`={settings.recipe!r} is not known; accepted: {', '.join(RECIPES)}.")
    if settings.sampler not in SAMPLERS:
        raise RecipeError(f"`sampler`={settings.sampler!r} is not known; accepted: {', '.join(SAMPLERS)}.")
    if settings.pruner not in PRUNERS:
        raise RecipeError(f"`pruner`={settings.pruner!r} is not known; accepted: {', '.join(PRUNERS)}.")
    if settings.direction not in (None, "minimize", "maximize"):
        raise RecipeError(f"`direction`={settings.direction!r} is not known; accepted: minimize, maximize.")
    if not isinstance(settings.space, dict) or not settings.space:
        raise RecipeError(f"`space` must map parameter names to values or ranges, got {settings.space!r}.")
    for name, values in settings.space.items():
        check_dimension(name, values, settings.sampler)
    if settings.sampler == "grid":
        settings.n_trials = math.prod(len(values) for values in settings.space.values())
    elif not isinstance(settings.n_trials, int) or settings.n_trials < 1:
        raise RecipeError(
            f"`n_trials` must be a positive integer for the {settings.sampler} sampler, got {settings.n_trials!r}."
        )
    return settings


def parameter_names(key: str) -> list[str]:
    """A space key names one parameter, or several that move together (`gaam_num_gaussians,gaam_num_heads`)."""
    return [name.strip() for name in key.split(",")]


def check_dimension(name: str, values, sampler: str) -> None:
    if isinstance(values, list):
        if not values:
            raise RecipeError(f"`space.{name}` is an empty list; give the values to try.")
        width = len(parameter_names(name))
        if width > 1 and not all(isinstance(v, list) and len(v) == width for v in values):
            raise RecipeError(f"`space.{name}`={values!r}: each value must be a list of {width} (one per parameter).")
        return
    if len(parameter_names(name)) > 1:
        raise RecipeError(f"`space.{name}`: parameters that move together take a list of value lists, got {values!r}.")
    if sampler == "grid":
        raise RecipeError(f"`space.{name}`={values!r}: a grid needs a list of values for every parameter.")
    keys = set(values) if isinstance(values, dict) else set()
    if not isinstance(values, dict) or keys - {"low", "high", "log", "step"} or not {"low", "high"} <= keys:
        raise RecipeError(
            f"`space.{name}`={values!r} is neither a list of values nor a range {{low, high[, log][, step]}}."
        )
    if not values["low"] < values["high"]:
        raise RecipeError(f"`space.{name}`: `low` ({values['low']}) must be below `high` ({values['high']}).")


def split_space(space: dict, training_args: TrainingArguments, model_config_fields: set[str]):
    """Space parameters as (`TrainingArguments` fields, model-config fields); an unknown parameter is an error."""
    training_fields = {field.name for field in dataclasses.fields(TrainingArguments)}
    names = [name for key in space for name in parameter_names(key)]
    unknown = sorted(set(names) - training_fields - model_config_fields)
    if unknown:
        raise RecipeError(
            f"search space parameters {unknown} are neither `TrainingArguments` fields nor fields of the model's "
            f"configuration; the configuration accepts: {', '.join(sorted(model_config_fields))}."
        )
    return [name for name in names if name in training_fields], [name for name in names if name not in training_fields]


def optuna_space(space: dict):
    def suggest(trial) -> dict:
        chosen = {}
        for name, values in space.items():
            if len(parameter_names(name)) > 1:
                # optuna's choices are scalars: a tuple of values travels as its JSON text.
                picked = trial.suggest_categorical(name, [json.dumps(v) for v in values])
                chosen.update(zip(parameter_names(name), json.loads(picked)))
            elif isinstance(values, list):
                chosen[name] = trial.suggest_categorical(name, values)
            elif all(isinstance(values[k], int) for k in ("low", "high")) and not values.get("log", False):
                chosen[name] = trial.suggest_int(name, values["low"], values["high"], step=values.get("step", 1))
            else:
                chosen[name] = trial.suggest_float(
                    name, float(values["low"]), float(values["high"]), log=values.get("log", False),
                    step=values.get("step"),
                )
        return chosen

    return suggest


class SaveTrialModel(TrainerCallback):
    """Each trial's final model goes to `output_dir/trials/<trial>`, so the best one can be kept."""

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and state.trial_name is not None:
            model.save_pretrained(Path(args.output_dir) / "trials" / state.trial_name)


def parse_command_line(argv=None) -> str:
    parser = argparse.ArgumentParser(
        prog="hf-heads-search", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("search_file", help="the search's YAML file (see above)")
    return parser.parse_args(argv).search_file


def main(argv=None):
    path = parse_command_line(argv)
    settings = read_settings(path)
    recipe = RECIPES[settings.recipe].from_dict(settings.arguments, source=f"`arguments` of {path}")
    recipe.validation_required = "the search compares its trials on it"
    recipe.check_arguments()
    config_fields = recipe.overridable_fields() - set(recipe.fields_set_by_recipe())
    training_names, config_names = split_space(settings.space, recipe.training_args, config_fields)
    output_dir = Path(recipe.training_args.output_dir)
    if (output_dir / "search.db").exists():
        raise RecipeError(f"`output_dir` {output_dir} already holds a search (search.db); choose another folder.")
    metric = settings.metric or recipe.search_metrics[0]
    if metric not in recipe.search_metrics:
        raise RecipeError(
            f"`metric`={metric!r} is not reported by {settings.recipe}; accepted: {', '.join(recipe.search_metrics)}."
        )
    direction = settings.direction or ("minimize" if metric.endswith(("loss", "mse", "mae")) else "maximize")

    import optuna

    set_seed(recipe.training_args.seed)
    recipe.prepare()
    recipe.derive_logging_steps()
    suggest = optuna_space(settings.space)

    def model_init(trial):
        # `Trainer` builds the model before it applies the trial's `TrainingArguments` values, so the trial is
        # asked here first; optuna returns the same value when `hp_space` asks again in the same trial.
        chosen = suggest(trial) if trial is not None else {}
        return recipe.new_model({name: chosen[name] for name in config_names if name in chosen})

    trainer = recipe.new_trainer(model_init=model_init)
    trainer.add_callback(SaveTrialModel())
    output_dir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(output_dir / 'search.db').resolve()}"
    sampler = {
        "grid": lambda: optuna.samplers.GridSampler(
            {key: [json.dumps(v) for v in values] if len(parameter_names(key)) > 1 else values
             for key, values in settings.space.items()},
            seed=settings.seed,
        ),
        "random": lambda: optuna.samplers.RandomSampler(seed=settings.seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=settings.seed),
    }[settings.sampler]()
    if settings.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_warmup_steps=0)
    else:
        pruner = optuna.pruners.NopPruner()
    best = trainer.hyperparameter_search(
        hp_space=lambda trial: {k: v for k, v in suggest(trial).items() if k in training_names},
        compute_objective=lambda metrics: metrics[metric], n_trials=settings.n_trials, direction=direction,
        backend="optuna", hp_name=lambda trial: f"trial-{trial.number}", sampler=sampler, pruner=pruner,
        storage=storage, study_name="search", load_if_exists=False,
    )
    study = optuna.load_study(study_name="search", storage=storage)
    rows = write_results(study, settings.space, metric, output_dir, direction)
    keep_best_model(output_dir, best.run_id, recipe.tokenizer)
    print(f"best trial {best.run_id}: {metric} = {best.objective:.4f} with {best.hyperparameters}")
    print_output_folder(output_dir)
    return rows


def write_results(study, space: dict, metric: str, output_dir: Path, direction: str) -> list[dict]:
    rows = []
    for trial in study.trials:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete else None
        rows.append({
            "trial": trial.number, **trial_values(trial.params, space), metric: trial.value,
            "state": trial.state.name.lower(), "wall_seconds": None if seconds is None else round(seconds, 1),
        })
    columns = list(rows[0])
    with open(output_dir / "search_results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if row[c] is None else f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c])
                                for c in columns) + " |" for row in rows]
    (output_dir / "search_results.md").write_text("\n".join(lines) + "\n")
    parameters = [name for key in space for name in parameter_names(key)]
    plot_search_trials(rows, metric, parameters, output_dir / "search_results.png",
                       greater_is_better=direction == "maximize")
    print("\n".join(lines))
    return rows


def trial_values(params: dict, space: dict) -> dict:
    values = {}
    for key in space:
        names = parameter_names(key)
        if len(names) == 1:
            values[key] = params.get(key)
        else:
            values.update(zip(names, json.loads(params[key]) if key in params else [None] * len(names)))
    return values


def keep_best_model(output_dir: Path, run_id: str, tokenizer) -> None:
    best = output_dir / "best_model"
    if best.exists():
        shutil.rmtree(best)
    shutil.copytree(output_dir / "trials" / f"trial-{run_id}", best)
    tokenizer.save_pretrained(best)


def command_line() -> int:
    """The `hf-heads-search` command: a user mistake prints one `error:` line and exits with status 2."""
    return run_from_command_line(main, "hf-heads-search")


if __name__ == "__main__":
    raise SystemExit(command_line())
