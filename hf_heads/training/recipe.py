"""
The shape every recipe shares: arguments → checks → data, tokenizer and model → `Trainer` → the output folder.

`Recipe.run()` is the whole run; a subclass (`classification.ClassifierRecipe`,
`language_modeling.LanguageModelRecipe`) supplies its arguments and the steps that differ, and `search` drives the
same steps over trials. Everything that can fail is checked before the first training step, and the model is saved
before anything optional (plots, card).
"""

import contextlib
import importlib.util
import math
from dataclasses import asdict
from pathlib import Path

from transformers import AutoConfig, EarlyStoppingCallback, set_seed

from .arguments import MODEL_TYPES, RecipeArgumentParser, check_overrides, parse_overrides
from .initialization import WEIGHT_INIT_SCHEMES
from ..hub import check_hub_strategy, use_model_card
from ..hub.model_card import check_license
from .checkpoints import SmallCheckpointsCallback
from .distributed import declare_loss_scaling, join_cpu_processes
from .errors import RecipeError
from .output_dir import RunLock, check_output_dir, check_room, checkpoint_bytes, resolve_resume_checkpoint
from .outputs import print_output_folder, save_model_and_results


LOGGED_POINTS = 20  # training-loss points a run logs when `--logging_steps` is left to the recipe


class Recipe:
    """One training recipe. Subclasses set the class attributes and implement `prepare`, `new_model`, `evaluate`."""

    prog: str  # the console entry point
    usage: str  # the text `--help` starts with
    argument_classes: tuple  # dataclasses read by the parser, `RecipeTrainingArguments` last
    search_metrics: tuple[str, ...]  # metrics a search may optimise; the first is the default

    def __init__(self, *arguments, explicit: set[str] = frozenset()):
        *self.arguments, self.training_args = arguments
        self.explicit = set(explicit)  # names the user gave, so defaults derived from the data never override them
        self.split_notes: list[str] = []  # how the splits were made, for the log and the card

    @classmethod
    def argument_parser(cls) -> RecipeArgumentParser:
        # Before `TrainingArguments` exist: a multi-process launch on a CPU-only machine must select the CPU now.
        join_cpu_processes()
        return RecipeArgumentParser(cls.argument_classes, prog=cls.prog, usage_text=cls.usage)

    @classmethod
    def from_argv(cls, argv=None) -> "Recipe":
        *arguments, explicit = cls.argument_parser().parse(argv)
        return cls(*arguments, explicit=explicit)

    @classmethod
    def from_dict(cls, values: dict, source: str) -> "Recipe":
        """Arguments from a mapping (a search file's `arguments`), checked like a YAML file's keys."""
        parser = cls.argument_parser()
        *arguments, explicit = parser.parse(parser.mapping_as_flags(values, source))
        return cls(*arguments, explicit=explicit)

    # ----- checks that need neither data nor model

    @property
    def model_args(self):
        return self.arguments[0]

    @property
    def data_args(self):
        return next(a for a in self.arguments if hasattr(a, "dataset_name"))

    def check_arguments(self) -> None:
        """Every mistake found without reading data or building a model. Resolves `--resume_from_checkpoint true`."""
        model_args, training_args = self.model_args, self.training_args
        if importlib.util.find_spec("matplotlib") is None:
            raise ImportError(
                "The recipes draw loss curves and heatmaps with matplotlib: `pip install hf-heads[plots]`."
            )
        if model_args.model_name_or_path is None and model_args.model_type is None:
            raise RecipeError(
                "Give `--model_name_or_path` (a checkpoint), `--model_type` (from scratch), or both (the checkpoint's "
                "weights in that architecture, e.g. a GPT-2 checkpoint as `gaam_gpt2`)."
            )
        if model_args.model_type is not None and model_args.model_type not in MODEL_TYPES:
            raise RecipeError(
                f"`--model_type`={model_args.model_type!r} is not supported; accepted: {', '.join(MODEL_TYPES)}."
            )
        if model_args.weight_init not in WEIGHT_INIT_SCHEMES:
            raise RecipeError(
                f"`--weight_init`={model_args.weight_init!r} is not supported; accepted: "
                f"{', '.join(WEIGHT_INIT_SCHEMES)}."
            )
        data_args = self.data_args
        has_files = bool(data_args.train_file or data_args.validation_file or getattr(data_args, "test_file", None))
        if (data_args.dataset_name is None) == (not has_files):
            raise RecipeError("Give either `--dataset_name` or `--train_file` (+ `--validation_file`, ...), not both.")
        if has_files and data_args.train_file is None:
            raise RecipeError("`--validation_file` / `--test_file` need a `--train_file`.")
        if model_args.early_stopping_patience and (
            training_args.eval_strategy == "no" or not training_args.load_best_model_at_end
        ):
            raise RecipeError(
                f"`--early_stopping_patience`={model_args.early_stopping_patience} needs evaluations and the best "
                "model kept: pass `--eval_strategy epoch --save_strategy epoch --load_best_model_at_end true` "
                f"(got eval_strategy={training_args.eval_strategy.value!r}, "
                f"load_best_model_at_end={training_args.load_best_model_at_end})."
            )
        check_overrides(self.overrides(), self.overridable_fields(), self.fields_set_by_recipe(),
                        self.config_for_overrides)
        try:
            check_hub_strategy(training_args)
            check_license(model_args.license)
        except ValueError as error:  # the hub package's own checks of --hub_strategy and --license
            raise RecipeError(str(error)) from None
        training_args.resume_from_checkpoint = resolve_resume_checkpoint(
            training_args.resume_from_checkpoint, training_args.output_dir, log=self.log
        )
        check_output_dir(
            training_args.output_dir, overwrite=model_args.overwrite_output_dir,
            resuming=training_args.resume_from_checkpoint is not None,
        )

    def log(self, message: str) -> None:
        """Printed once, by the process that writes the outputs."""
        if self.training_args.should_save:
            print(message)

    def overrides(self) -> dict:
        return parse_overrides(self.model_args.config_overrides)

    def overridable_fields(self) -> set[str]:
        """The configuration fields `--config_overrides` may set: those of the model the run builds."""
        model_args = self.model_args
        if model_args.model_type is not None:
            return set(AutoConfig.for_model(model_args.model_type).to_dict())
        path = model_args.model_name_or_path
        if "/" in path and path.startswith((".", "/", "~")) and not Path(path).expanduser().exists():
            # transformers would read it as a malformed Hub id: a folder that is not there is the likelier mistake.
            raise RecipeError(f"`--model_name_or_path`={path!r}: no such folder (give a model folder or a Hub id).")
        try:
            return set(AutoConfig.from_pretrained(path).to_dict())
        except OSError as error:  # not a model folder, or a Hub id that cannot be had: transformers says which
            raise RecipeError(f"`--model_name_or_path`={path!r} cannot be loaded: {error}") from None

    def config_for_overrides(self, overrides: dict):
        """The configuration `--config_overrides` apply to, built with them: wrong types and values fail here, before
        any data is read."""
        model_args = self.model_args
        if model_args.model_type is not None:
            return AutoConfig.for_model(model_args.model_type, **overrides)
        return AutoConfig.from_pretrained(model_args.model_name_or_path, **overrides)

    def fields_set_by_recipe(self) -> dict[str, str]:
        """Configuration fields the recipe sets itself, with where their value comes from."""
        return {name: "the tokenizer" for name in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")}

    # ----- the run

    def prepare(self) -> None:
        """Data, tokenizer and a first model (`self.datasets`, `self.tokenizer`, `self.first_model`)."""
        raise NotImplementedError

    def new_model(self, extra_overrides: dict | None = None):
        """A fresh model for the run or a search trial (`extra_overrides`: the trial's configuration values)."""
        raise NotImplementedError

    def compute_metrics(self):
        return None

    def data_collator(self):
        raise NotImplementedError

    def callbacks(self) -> list:
        # Checkpoints of a run with a frozen backbone (or LoRA) hold what trains, not copies of the frozen weights.
        callbacks = [SmallCheckpointsCallback()]
        if self.model_args.early_stopping_patience:
            threshold = getattr(self.model_args, "early_stopping_threshold", 0.0)
            callbacks.append(EarlyStoppingCallback(self.model_args.early_stopping_patience, threshold))
        return callbacks

    def new_trainer(self, model=None, model_init=None):
        """`Trainer`, told how the model scales its loss, writing this package's card through its card hook."""
        from transformers import Trainer

        if model is not None:
            declare_loss_scaling(model)
        if model_init is not None:
            model_init = _declaring_loss_scaling(model_init)
        trainer = Trainer(
            model=model, model_init=model_init, args=self.training_args, train_dataset=self.datasets["train"],
            eval_dataset=self.datasets.get("validation"), data_collator=self.data_collator(),
            processing_class=self.tokenizer, compute_metrics=self.compute_metrics(), callbacks=self.callbacks(),
        )
        self.card = use_model_card(
            trainer, dataset_name=dataset_label(self.data_args), license=self.model_args.license,
            base_model=self.model_args.model_name_or_path,
            hyperparameters=card_hyperparameters(self.training_args, *self.arguments),
        )
        return trainer

    def planned_steps(self) -> int:
        """Optimizer steps the run will take."""
        args = self.training_args
        if args.max_steps > 0:
            return args.max_steps
        batches = math.ceil(len(self.datasets["train"]) / (args.per_device_train_batch_size * args.world_size))
        return math.ceil(max(1, batches // args.gradient_accumulation_steps) * args.num_train_epochs)

    def derive_logging_steps(self) -> None:
        """Unless given, log the training loss `LOGGED_POINTS` times in the run (every step in a shorter one)."""
        if "logging_steps" in self.explicit:
            return
        self.training_args.logging_steps = max(1, self.planned_steps() // LOGGED_POINTS)

    def check_room(self, model) -> None:
        """The output folder's disk holds the checkpoints the run keeps and the final model (before training)."""
        args = self.training_args
        if args.save_strategy == "no":
            saves = 0
        elif args.save_strategy == "epoch":
            saves = math.ceil(args.num_train_epochs) if args.max_steps <= 0 else 1
        elif args.save_steps < 1:  # a fraction of the run
            saves = math.ceil(1 / args.save_steps)
        else:
            saves = max(1, self.planned_steps() // int(args.save_steps))
        kept = min(saves, args.save_total_limit + int(args.load_best_model_at_end)) if args.save_total_limit else saves
        trained_only = any(not parameter.requires_grad for parameter in model.parameters())
        full_copy = checkpoint_bytes(model, optimizer_states_per_parameter=0)
        per_checkpoint = checkpoint_bytes(model) - (full_copy - _trainable_bytes(model) if trained_only else 0)
        # The final model, the kept checkpoints, and one full copy while a small checkpoint is being written.
        check_room(args.output_dir, 2 * full_copy + kept * per_checkpoint, f"the final model and {kept} checkpoint(s)")

    def run_lock(self):
        """The folder's lock, held by the process that writes the outputs; other processes hold nothing."""
        return RunLock(self.training_args.output_dir, log=print) if self.training_args.should_save else (
            contextlib.nullcontext())

    def run(self) -> dict:
        self.check_arguments()
        with self.run_lock():
            metrics = self._run()
        if self.training_args.should_save:
            print_output_folder(self.training_args.output_dir)
        return metrics

    def _run(self) -> dict:
        set_seed(self.training_args.seed)
        self.prepare()
        self.derive_logging_steps()
        model = self.trainable(self.first_model)
        self.check_room(model)
        print(trainable_parameters_line(model, self.training_args))
        trainer = self.new_trainer(model=model)
        train_result = trainer.train(resume_from_checkpoint=self.training_args.resume_from_checkpoint)
        metrics = {key if key.startswith("train_") else f"train_{key}": value
                   for key, value in train_result.metrics.items()}
        metrics.update(self.samples())
        metrics.update(self.evaluate(trainer))
        self.save(trainer, metrics)  # every process: `Trainer.save_model` gathers sharded (FSDP, ZeRO-3) weights
        if trainer.is_world_process_zero():
            try:
                self.save_extras(trainer, metrics)
                self.card.splits.update(self.card_splits())
                self.card.data_notes = " ".join(self.split_notes)
                trainer.create_model_card()  # the card hook: loss curves, card, no pickled arguments
            except Exception:
                print(f"The model and all_results.json are saved in {self.training_args.output_dir}; writing the "
                      "plots and the model card failed:")
                raise
        if self.training_args.push_to_hub:
            trainer.push_to_hub(commit_message="End of training")  # every process; the main one uploads
        return metrics

    def card_splits(self) -> dict[str, str]:
        """What each split is, for the card: its rows (the split notes say how they were made)."""
        return {name: f"{len(split):,} rows" for name, split in self.datasets.items()}

    def trainable(self, model):
        """The model as `Trainer` trains it (a subclass may wrap it, e.g. in LoRA)."""
        return model

    def samples(self) -> dict:
        """Rows per split, as `transformers`' example scripts record them (0 for a split the run does not have)."""
        return {f"{prefix}_samples": len(self.datasets[name]) if name in self.datasets else 0
                for prefix, name in (("train", "train"), ("eval", "validation"), ("test", "test"))}

    def evaluate(self, trainer) -> dict:
        raise NotImplementedError

    def save(self, trainer, metrics: dict) -> None:
        """Weights, tokenizer and `all_results.json`: what must survive anything that follows."""
        save_model_and_results(trainer, self.tokenizer, metrics)

    def save_extras(self, trainer, metrics: dict) -> None:
        """Plots and the model card, written after the model is safe."""
        raise NotImplementedError

    def common_plots(self, trainer, model, dataset) -> None:
        """The Importance Factor heatmap of a model with GAAM layers, on a sample of `dataset`, along the axis its GAAM
        normalises. (Loss curves are drawn with the card, by `Trainer`'s card hook.)"""
        import hf_heads
        from hf_heads.hub import normalised_axis_name, plot_importance_heatmap

        has_gaam = any(isinstance(m, hf_heads.GaussianAdaptiveAttention) for m in model.modules())
        # The "daam" head's gate is the GAAM authors' own, not the op: it reports its Importance Factor the same way.
        has_gate = has_gaam or any(getattr(m, "reports_importance", False) for m in model.modules())
        if not has_gate:
            return
        batches = list(first_batches(trainer.get_eval_dataloader(dataset)))
        factors = hf_heads.importance_factors(model, batches)
        plot_importance_heatmap(factors, Path(self.training_args.output_dir) / "gaam_importance.png",
                                axis_name=normalised_axis_name(model))
        if has_gaam:
            self.report_gaam_contribution(model, batches)

    def report_gaam_contribution(self, model, batches) -> None:
        """How much of the model GAAM is on held-out rows, printed and put in the card: a GAAM that is configured but
        contributes nothing is a failure a user must be able to see."""
        import hf_heads

        contribution = hf_heads.gaam_contribution(model, batches)
        print(f"GAAM contribution on {contribution.num_examples} held-out rows: {contribution}")
        self.card.sections["GAAM contribution"] = (
            "How much each GAAM layer adds to the representation it feeds (norm of the GAAM branch over the norm of "
            "the stream it is added to, real tokens only), and the evaluation loss with every GAAM branch removed "
            "(`hf_heads.gaam_contribution`).\n\n" + contribution.to_markdown()
        )


def _declaring_loss_scaling(model_init):
    def init(*args):
        model = model_init(*args)
        declare_loss_scaling(model)
        return model

    return init


def _trainable_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def trainable_parameters_line(model, training_args) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return (
        f"Process {training_args.process_index + 1} of {training_args.world_size}: trainable parameters {trainable:,} "
        f"of {sum(p.numel() for p in model.parameters()):,}"
    )


def card_hyperparameters(training_args, *argument_dataclasses) -> dict:
    """The arguments a reader of the model card needs: what was set, plus the main `TrainingArguments`."""
    chosen = {}
    for arguments in argument_dataclasses:
        chosen.update({key: value for key, value in asdict(arguments).items() if value not in (None, False)})
    for name in ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "lr_scheduler_type",
                 "warmup_steps", "weight_decay", "max_grad_norm", "seed"):
        chosen[name] = getattr(training_args, name)
    return chosen


def first_batches(dataloader, limit: int = 8):
    """At most `limit` batches of `dataloader` (the Importance Factor needs a sample, not a full pass)."""
    for index, batch in enumerate(dataloader):
        if index == limit:
            break
        yield batch


def dataset_label(data_args) -> str:
    return data_args.dataset_name or Path(data_args.train_file).name
