"""Pretrain (or continue training) a causal language model with `Trainer`: GPT-2 or GAAM-GPT2, BPE or characters.

    python recipes/pretrain_lm.py --model_type gaam_gpt2 --tokenizer char --config_overrides n_layer=4,n_embd=256 \
        --train_file text8.txt --block_size 128 --output_dir runs/text8 --max_steps 20000
    python recipes/pretrain_lm.py recipes/configs/text8_char_gaam_gpt2.yaml
    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml recipes/pretrain_lm.py ...

The text is tokenised ("bpe": a byte-level BPE trained on the training text; "char": one token per character of a
fixed alphabet, text8's a–z + space by default, the text cleaned to that alphabet) and packed into blocks of
`--block_size` tokens. Validation: `--validation_file`, the source's validation split, or the last
`--validation_split_percentage`% of the blocks. Reported: loss, perplexity and, for character models, bits per
character. After training it prints sample generations with each token's probability and its top-k alternatives.
The output folder is ready for the Hub (weights, code for `trust_remote_code=True`, tokenizer, results, loss
curves, GAAM Importance Factor heatmap, model card).
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    EarlyStoppingCallback,
    GPT2LMHeadModel,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

import hf_heads
from hf_heads.hub import plot_loss_curves, write_model_card
from hf_heads.tokenization import TEXT8_ALPHABET, CharTokenizer, train_bpe_tokenizer
from hf_heads.training.initialization import initialize_new_weights
from hf_heads.training.lm_data import hold_out_tail, load_text_corpus, normalize_to_alphabet, pack_into_blocks
from hf_heads.training.recipe import (
    RecipeModelArguments,
    check_model_arguments,
    card_hyperparameters,
    first_batches,
    parse_overrides,
    parse_recipe_arguments,
    trainable_parameters_line,
)


MODEL_CLASSES = {"gpt2": GPT2LMHeadModel, "gaam_gpt2": hf_heads.GaamGPT2LMHeadModel}
TOKENIZERS = ("bpe", "char")


@dataclass
class ModelArguments(RecipeModelArguments):
    tokenizer: str = field(default="bpe", metadata={"help": f"From scratch: {TOKENIZERS}."})
    tokenizer_vocab_size: int = field(default=8000, metadata={"help": "BPE vocabulary size."})
    char_alphabet: str = field(default=TEXT8_ALPHABET, metadata={"help": "Characters of the char tokenizer."})
    early_stopping_threshold: float = field(default=0.0, metadata={"help": "Smallest improvement that counts."})
    sample_prompts: str | None = field(
        default=None, metadata={"help": "'|'-separated prompts for the sample generations (default: one from the data)."}
    )
    sample_max_new_tokens: int = field(default=20, metadata={"help": "Tokens generated per sample (0: no samples)."})
    sample_top_k: int = field(default=5, metadata={"help": "Alternatives shown per generated token."})


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "A Hub dataset, or bbc_news (offline)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    train_file: str | None = field(default=None, metadata={"help": "txt (one text per line)/csv/json/jsonl/parquet."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation text, same format."})
    text_column: str = field(default="text", metadata={"help": "The column holding the text."})
    block_size: int = field(default=128, metadata={"help": "Tokens per training block."})
    validation_split_percentage: float = field(
        default=5.0, metadata={"help": "Without validation data: the last N% of the blocks."}
    )


def parse_arguments(argv=None):
    return parse_recipe_arguments((ModelArguments, DataArguments, TrainingArguments), argv)


def check_arguments(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> None:
    """Every mistake found here is reported before any data is read or model built."""
    check_model_arguments(model_args, training_args)
    if model_args.tokenizer not in TOKENIZERS:
        raise ValueError(f"`--tokenizer`={model_args.tokenizer!r} is not supported; accepted: {', '.join(TOKENIZERS)}.")
    if data_args.block_size < 2:
        raise ValueError(f"`--block_size` must be at least 2, got {data_args.block_size}.")
    if (data_args.dataset_name is None) == (data_args.train_file is None):
        raise ValueError("Give either `--dataset_name` or `--train_file` (+ `--validation_file`).")
    if data_args.validation_file and not data_args.train_file:
        raise ValueError("`--validation_file` needs a `--train_file`.")
    if model_args.early_stopping_patience:
        if training_args.eval_strategy == "no" or not training_args.load_best_model_at_end:
            raise ValueError(
                f"`--early_stopping_patience`={model_args.early_stopping_patience} needs evaluations and the best "
                "model kept: pass `--eval_strategy steps --save_strategy steps --load_best_model_at_end true` "
                f"(got eval_strategy={training_args.eval_strategy.value!r}, "
                f"load_best_model_at_end={training_args.load_best_model_at_end})."
            )


def build_tokenizer(model_args, train_texts):
    if model_args.model_name_or_path is not None:
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    elif model_args.tokenizer == "char":
        tokenizer = CharTokenizer(alphabet=model_args.char_alphabet)
    else:
        tokenizer = train_bpe_tokenizer(train_texts, vocab_size=model_args.tokenizer_vocab_size)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_model(model_args, tokenizer, block_size: int):
    overrides = parse_overrides(model_args.config_overrides)
    if model_args.model_name_or_path is not None:
        # With `--model_type` too, the checkpoint's weights go into that architecture (GPT-2 → GAAM-GPT2).
        model_class = AutoModelForCausalLM if model_args.model_type is None else MODEL_CLASSES[model_args.model_type]
        model, loading = model_class.from_pretrained(
            model_args.model_name_or_path, output_loading_info=True, **overrides
        )
        new_parameters = set(loading["missing_keys"])
    else:
        overrides.setdefault("n_positions", max(block_size, 64))
        config = AutoConfig.for_model(
            model_args.model_type, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **overrides,
        )
        model = AutoModelForCausalLM.from_config(config)
        new_parameters = None
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and block_size > positions:
        raise ValueError(f"`--block_size`={block_size} exceeds the model's {positions} positions.")
    initialize_new_weights(model, model_args.weight_init, new_parameters)
    return model


def language_model_metrics(eval_loss: float, is_char_model: bool) -> dict[str, float]:
    """Perplexity per token; for character models one token is one character, so bits/char = loss / ln 2."""
    metrics = {"perplexity": math.exp(min(eval_loss, 50.0))}
    if is_char_model:
        metrics["bits_per_character"] = eval_loss / math.log(2)
    return metrics


def sample_generations(model, tokenizer, model_args, validation_texts) -> list[str]:
    if model_args.sample_max_new_tokens <= 0:
        return []
    prompts = model_args.sample_prompts.split("|") if model_args.sample_prompts else [
        " ".join(validation_texts[0].split()[:3])
    ]
    model.eval()
    return [
        str(hf_heads.explain(model, tokenizer, prompt, max_new_tokens=model_args.sample_max_new_tokens,
                             top_k=model_args.sample_top_k))
        for prompt in prompts
    ]


@dataclass
class PreparedData:
    """What every trial of a run shares: the cleaned corpus, tokenizer, packed blocks."""

    corpus: object
    tokenizer: object
    datasets: dict
    block_size: int
    is_char_model: bool
    first_model: object  # built while preparing (the block-size check needs one)


def prepare(model_args, data_args, training_args) -> PreparedData:
    data_files = {split: path for split, path in (("train", data_args.train_file),
                                                  ("validation", data_args.validation_file)) if path}
    corpus = load_text_corpus(
        data_args.dataset_name, data_args.dataset_config_name, data_files or None, data_args.text_column,
        seed=training_args.seed,
    )
    is_char_model = model_args.model_name_or_path is None and model_args.tokenizer == "char"
    if is_char_model:
        with training_args.main_process_first(desc="cleaning text"):
            corpus = corpus.map(
                lambda row: {data_args.text_column: normalize_to_alphabet(row[data_args.text_column],
                                                                          model_args.char_alphabet)},
                desc="Cleaning text to the alphabet",
            )
    tokenizer = build_tokenizer(model_args, corpus["train"][data_args.text_column])
    model = build_model(model_args, tokenizer, data_args.block_size)
    with training_args.main_process_first(desc="tokenizing"):
        tokenized = corpus.map(
            lambda rows: tokenizer(rows[data_args.text_column]), batched=True,
            remove_columns=[data_args.text_column], desc="Tokenizing",
        )
        blocks = {name: pack_into_blocks(split, data_args.block_size, tokenizer.eos_token_id)
                  for name, split in tokenized.items()}
    for name, split in blocks.items():
        if len(split) == 0:
            raise ValueError(f"The {name} text is shorter than one block of {data_args.block_size} tokens.")
    if "validation" not in blocks:
        blocks = dict(hold_out_tail(blocks["train"], data_args.validation_split_percentage))
    return PreparedData(corpus, tokenizer, blocks, data_args.block_size, is_char_model, model)


def new_model(model_args, prepared: PreparedData):
    """A fresh model for a run or a search trial (`model_args.config_overrides` may carry the trial's values)."""
    return build_model(model_args, prepared.tokenizer, prepared.block_size)


def new_trainer(model_args, training_args, prepared: PreparedData, model=None, model_init=None) -> Trainer:
    callbacks = []
    if model_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(model_args.early_stopping_patience, model_args.early_stopping_threshold))
    return Trainer(
        model=model, model_init=model_init, args=training_args, train_dataset=prepared.datasets["train"],
        eval_dataset=prepared.datasets["validation"], data_collator=default_data_collator,
        processing_class=prepared.tokenizer, callbacks=callbacks,
    )


SEARCH_METRICS = ("eval_loss",)


def main(argv=None):
    model_args, data_args, training_args = parse_arguments(argv)
    check_arguments(model_args, data_args, training_args)
    set_seed(training_args.seed)
    prepared = prepare(model_args, data_args, training_args)
    model, tokenizer = prepared.first_model, prepared.tokenizer
    print(trainable_parameters_line(model, training_args))

    trainer = new_trainer(model_args, training_args, prepared, model=model)
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = {f"train_{k}" if not k.startswith("train_") else k: v for k, v in train_result.metrics.items()}
    metrics.update(trainer.evaluate())
    metrics.update(
        {f"eval_{k}": v for k, v in language_model_metrics(metrics["eval_loss"], prepared.is_char_model).items()}
    )
    if trainer.is_world_process_zero():
        save_outputs(trainer, model, tokenizer, model_args, data_args, training_args, metrics)
        print(json.dumps(metrics, indent=2))
        corpus = prepared.corpus
        validation_texts = corpus["validation"][data_args.text_column] if "validation" in corpus else \
            corpus["train"][data_args.text_column][-1:]
        for sample in sample_generations(model, tokenizer, model_args, validation_texts):
            print(f"\n{sample}")
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return metrics


def save_outputs(trainer, model, tokenizer, model_args, data_args, training_args, metrics):
    output_dir = Path(training_args.output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    (output_dir / "all_results.json").write_text(json.dumps(metrics, indent=2))
    images = {"Loss curves": "loss_curves.png"}
    plot_loss_curves(trainer.state.log_history, output_dir / "loss_curves.png")
    if any(isinstance(m, hf_heads.GaussianAdaptiveAttention) for m in model.modules()):
        factors = hf_heads.importance_factors(model, first_batches(trainer.get_eval_dataloader()))
        hf_heads.plot_importance(factors, output_dir / "gaam_importance.png")
        images["GAAM Importance Factor"] = "gaam_importance.png"
    reported = {"loss": metrics["eval_loss"], "perplexity": metrics["eval_perplexity"]}
    if "eval_bits_per_character" in metrics:
        reported["bits_per_character"] = metrics["eval_bits_per_character"]
    write_model_card(
        output_dir,
        model_name=output_dir.name,
        pipeline_tag="text-generation",
        model_type=model.config.model_type,
        dataset_name=data_args.dataset_name or Path(data_args.train_file).name,
        metrics=reported,
        hyperparameters=card_hyperparameters(training_args, model_args, data_args),
        base_model=model_args.model_name_or_path,
        images=images,
    )


if __name__ == "__main__":
    main()
