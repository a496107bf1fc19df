"""
Pretrain (or continue training) a causal language model with `Trainer`: GPT-2 or GAAM-GPT2, BPE or characters.

The text is tokenised ("bpe": a byte-level BPE trained on the training text; "char": one token per character of a
fixed alphabet, text8's a–z + space by default, the text cleaned to that alphabet) and packed into blocks of
`--block_size` tokens, as `transformers`' `run_clm.py` does; empty lines (and, for characters, lines left empty by the
cleaning) are left out, and the log and the card say how many. Validation: `--validation_file`, the source's validation
split, or the last `--validation_split_percentage`% of the blocks (said in the log and the card). Reported: loss,
perplexity and, for character models, bits per character; then sample generations with each token's probability and
its top-k alternatives.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel, default_data_collator

import hf_heads
from hf_heads.tokenization import TEXT8_ALPHABET, CharTokenizer, train_bpe_tokenizer

from .arguments import DataArguments, ModelArguments, RecipeTrainingArguments, usage_text
from .errors import RecipeError, run_from_command_line
from .initialization import initialize_new_weights
from .lm_data import drop_empty_texts, hold_out_tail, load_text_corpus, normalize_to_alphabet, pack_into_blocks
from .recipe import Recipe
from .tokenizer import fit_tokenizer_to_model


MODEL_CLASSES = {"gpt2": GPT2LMHeadModel, "gaam_gpt2": hf_heads.GaamGPT2LMHeadModel}
TOKENIZERS = ("bpe", "char")


@dataclass
class LanguageModelArguments(ModelArguments):
    tokenizer: str = field(default="bpe", metadata={"help": f"From scratch: {TOKENIZERS}."})
    tokenizer_vocab_size: int = field(default=8000, metadata={"help": "BPE vocabulary size."})
    char_alphabet: str = field(default=TEXT8_ALPHABET, metadata={"help": "Characters of the char tokenizer."})
    early_stopping_threshold: float = field(default=0.0, metadata={"help": "Smallest improvement that counts."})
    sample_prompts: str | None = field(
        default=None,
        metadata={"help": "'|'-separated prompts for the sample generations (default: one from the data); an "
                  "empty prompt starts from the end-of-text token, as a new text does."},
    )
    sample_max_new_tokens: int = field(default=20, metadata={"help": "Tokens generated per sample (0: no samples)."})
    sample_top_k: int = field(default=5, metadata={"help": "Alternatives shown per generated token."})


@dataclass
class LanguageModelDataArguments(DataArguments):
    block_size: int = field(
        default=128, metadata={"help": "Tokens per training block; the saved tokenizer keeps it as model_max_length."}
    )
    validation_split_percentage: float = field(
        default=5.0, metadata={"help": "Without validation data: the last N percent of the blocks."}
    )


EXAMPLES = """\
  hf-heads-pretrain-lm --model_type gaam_gpt2 --tokenizer char --config_overrides n_layer=4,n_head=8,n_embd=256 \\
      --train_file text8.txt --block_size 128 --output_dir runs/text8 --max_steps 20000
  hf-heads-pretrain-lm recipes/configs/text8_char_lm.yaml --max_steps 200 --output_dir runs/short
  accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml recipes/pretrain_lm.py ..."""

YAML_EXAMPLE = """\
  model_type: gaam_gpt2
  tokenizer: char
  config_overrides: n_layer=4,n_head=8,n_embd=256
  train_file: text8.txt
  block_size: 128
  output_dir: runs/text8
  max_steps: 20000"""


class LanguageModelRecipe(Recipe):
    prog = "hf-heads-pretrain-lm"
    usage = usage_text(
        "Pretrain (or continue training) a causal language model with transformers' Trainer: GPT-2 or GAAM-GPT2, "
        "byte-level BPE or characters. Reports loss, perplexity and (characters) bits per character.",
        EXAMPLES, YAML_EXAMPLE,
    )
    argument_classes = (LanguageModelArguments, LanguageModelDataArguments, RecipeTrainingArguments)
    search_metrics = ("eval_loss",)

    def check_arguments(self) -> None:
        if self.model_args.tokenizer not in TOKENIZERS:
            raise RecipeError(
                f"`--tokenizer`={self.model_args.tokenizer!r} is not supported; accepted: {', '.join(TOKENIZERS)}."
            )
        if self.data_args.block_size < 2:
            raise RecipeError(f"`--block_size` must be at least 2, got {self.data_args.block_size}.")
        super().check_arguments()

    @property
    def is_char_model(self) -> bool:
        return self.model_args.model_name_or_path is None and self.model_args.tokenizer == "char"

    def prepare(self) -> None:
        data, model_args = self.data_args, self.model_args
        files = {split: path for split, path in (("train", data.train_file), ("validation", data.validation_file))
                 if path}
        corpus = load_text_corpus(data.dataset_name, data.dataset_config_name, files or None, data.text_column,
                                  encoding=data.encoding, log=self.data_note)
        if self.is_char_model:
            with self.training_args.main_process_first(desc="cleaning text"):
                corpus = corpus.map(
                    lambda row: {
                        data.text_column: normalize_to_alphabet(row[data.text_column], model_args.char_alphabet)
                    },
                    desc="Cleaning text to the alphabet",
                )
                # A line with no character of the alphabet is empty once cleaned.
                corpus = drop_empty_texts(corpus, data.text_column, files or None,
                                          "hold no character of --char_alphabet", log=self.data_note)
        self.corpus = corpus
        self.tokenizer = self.build_tokenizer(corpus["train"][data.text_column])
        self.first_model = self.new_model()
        fit_tokenizer_to_model(self.tokenizer, self.first_model, data.block_size, flag="--block_size")
        with self.training_args.main_process_first(desc="tokenizing"):
            tokenized = corpus.map(
                lambda rows: self.tokenizer(rows[data.text_column]), batched=True,
                remove_columns=[data.text_column], desc="Tokenizing",
            )
            blocks = {name: pack_into_blocks(split, data.block_size, self.tokenizer.eos_token_id)
                      for name, split in tokenized.items()}
        for name, split in blocks.items():
            if len(split) == 0:
                raise RecipeError(f"The {name} text is shorter than one block of {data.block_size} tokens.")
        if "validation" not in blocks:
            blocks = dict(hold_out_tail(blocks["train"], data.validation_split_percentage))
            note = (f"No validation text given: the last {data.validation_split_percentage:g}% of the training blocks "
                    f"({len(blocks['validation'])} of {len(blocks['train']) + len(blocks['validation'])}) are held "
                    "out for validation.")
            print(note)
            self.split_notes.append(note)
        self.datasets = blocks

    def data_note(self, message: str) -> None:
        """What was left out of the text: in the log and in the card."""
        self.log(message)
        self.split_notes.append(message)

    def build_tokenizer(self, train_texts):
        model_args = self.model_args
        if model_args.model_name_or_path is not None:
            tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
        elif model_args.tokenizer == "char":
            tokenizer = CharTokenizer(alphabet=model_args.char_alphabet)
        else:
            tokenizer = train_bpe_tokenizer(train_texts, vocab_size=model_args.tokenizer_vocab_size)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def new_model(self, extra_overrides: dict | None = None):
        model_args, block_size = self.model_args, self.data_args.block_size
        overrides = {**self.overrides(), **(extra_overrides or {})}
        if model_args.model_name_or_path is not None:
            # With `--model_type` too, the checkpoint's weights go into that architecture (GPT-2 → GAAM-GPT2).
            model_class = MODEL_CLASSES.get(model_args.model_type, AutoModelForCausalLM)
            model, loading = model_class.from_pretrained(model_args.model_name_or_path, output_loading_info=True,
                                                         **overrides)
            new_parameters = set(loading["missing_keys"])
        else:
            overrides.setdefault("n_positions", max(block_size, 64))
            tokenizer = self.tokenizer
            config = AutoConfig.for_model(
                model_args.model_type, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **overrides,
            )
            model = AutoModelForCausalLM.from_config(config)
            new_parameters = None
        initialize_new_weights(model, model_args.weight_init, new_parameters)
        return model

    def data_collator(self):
        return default_data_collator

    def evaluate(self, trainer) -> dict:
        metrics = trainer.evaluate()
        derived = language_model_metrics(metrics["eval_loss"], self.is_char_model)
        metrics.update({f"eval_{name}": value for name, value in derived.items()})
        return metrics

    def samples(self) -> dict:
        return {"train_samples": len(self.datasets["train"]), "eval_samples": len(self.datasets["validation"]),
                "test_samples": 0}

    def save_extras(self, trainer, metrics: dict) -> None:
        model = trainer.model
        self.common_plots(trainer, model, self.datasets["validation"])
        # Held-out text is the validation split (an LM run has no test split): the card says so.
        self.card.results["validation"] = {
            name: metrics[f"eval_{name}"] for name in ("loss", "perplexity", "bits_per_character")
            if f"eval_{name}" in metrics
        }
        for sample in self.sample_generations(model):
            print(f"\n{sample}")

    def sample_generations(self, model) -> list[str]:
        model_args = self.model_args
        if model_args.sample_max_new_tokens <= 0:
            return []
        if model_args.sample_prompts:
            prompts = model_args.sample_prompts.split("|")
        else:
            texts = self.corpus["validation" if "validation" in self.corpus else "train"][self.data_args.text_column]
            prompts = [" ".join((texts[0] if "validation" in self.corpus else texts[-1]).split()[:3])]
        model.eval()
        samples = []
        for prompt in prompts:
            if not prompt:
                # A tokenizer turns "" into no tokens, and `generate` needs at least one. The end-of-text token
                # separates the texts of a training block, so after it the model starts a text, as from nothing.
                if self.tokenizer.eos_token is None:
                    samples.append("(empty prompt skipped: the tokenizer has no end-of-text token to start from)")
                    continue
                prompt = self.tokenizer.eos_token
            samples.append(str(hf_heads.explain(model, self.tokenizer, prompt, top_k=model_args.sample_top_k,
                                                max_new_tokens=model_args.sample_max_new_tokens)))
        return samples


def language_model_metrics(eval_loss: float, is_char_model: bool) -> dict[str, float]:
    """Perplexity per token; for character models one token is one character, so bits/char = loss / ln 2."""
    metrics = {"perplexity": math.exp(min(eval_loss, 50.0))}
    if is_char_model:
        metrics["bits_per_character"] = eval_loss / math.log(2)
    return metrics


def main(argv=None) -> dict:
    """`hf-heads-pretrain-lm` / `recipes/pretrain_lm.py`: flags, or a YAML/JSON file followed by flags."""
    return LanguageModelRecipe.from_argv(argv).run()


def command_line() -> int:
    """The `hf-heads-pretrain-lm` command: a user mistake prints one `error:` line and exits with status 2."""
    return run_from_command_line(main, LanguageModelRecipe.prog)
