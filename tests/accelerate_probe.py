"""Trains a tiny GPT-2 with `Trainer` at a near-zero learning rate and reports what each process saw, as JSON.

Run alone or under `accelerate launch`; tests/test_accelerate.py compares its reports across gradient accumulation and
process counts, and against the loss computed here without `Trainer` (the oracle).

    python tests/accelerate_probe.py OUT.json --model lm|classifier --batch 8 --accumulate 1
"""

import argparse
import json

import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, Trainer, TrainingArguments

import hf_heads
from hf_heads.training.distributed import declare_loss_scaling, join_cpu_processes


SAMPLES, LENGTH, VOCAB, LABELS = 32, 12, 64, 3
MODELS = {
    "lm": GPT2LMHeadModel,
    "classifier": GPT2ForSequenceClassification,
    "gaam_classifier": hf_heads.GaamGPT2ForSequenceClassification,
}


def dataset():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (SAMPLES, LENGTH), generator=generator)
    labels = torch.randint(0, LABELS, (SAMPLES,), generator=generator)
    return ids, labels


def build_model(kind: str):
    torch.manual_seed(0)
    config_class = hf_heads.GaamGPT2Config if kind == "gaam_classifier" else GPT2Config
    config = config_class(
        n_layer=1, n_embd=16, n_head=2, vocab_size=VOCAB, n_positions=LENGTH, num_labels=LABELS, pad_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=1,
    )
    return MODELS[kind](config)


class Rows(torch.utils.data.Dataset):
    def __init__(self, kind):
        self.ids, self.labels = dataset()
        self.kind = kind

    def __len__(self):
        return SAMPLES

    def __getitem__(self, index):
        labels = self.ids[index] if self.kind == "lm" else self.labels[index]
        return {"input_ids": self.ids[index], "attention_mask": torch.ones(LENGTH, dtype=torch.long), "labels": labels}


@torch.no_grad()
def oracle_loss(kind: str) -> float:
    """Mean loss over every sample (causal LM: over every predicted token), from the untrained model, no `Trainer`."""
    model = build_model(kind).eval()
    ids, labels = dataset()
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    if kind == "lm":
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1)).item()
    return torch.nn.functional.cross_entropy(logits, labels).item()


def run(model_kind: str, batch: int, accumulate: int, output_dir: str, plain_trainer: bool = False,
        learning_rate: float = 1e-12) -> dict:
    """Trains one epoch (by default at a near-zero learning rate); what this process saw."""
    join_cpu_processes()  # as the recipes do
    model = build_model(model_kind)
    if not plain_trainer:
        declare_loss_scaling(model)
    args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulate,
        learning_rate=learning_rate, num_train_epochs=1, logging_steps=1, lr_scheduler_type="constant",
        train_sampling_strategy="sequential", save_strategy="no", report_to="none", disable_tqdm=True, seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Rows(model_kind))
    result = trainer.train()
    return {
        "world_size": args.world_size,
        "process_index": args.process_index,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "train_loss": result.metrics["train_loss"],
        "step_losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        "grad_norms": [entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry],
        "oracle_loss": oracle_loss(model_kind),
        "final_weights": {name: parameter.detach().flatten()[:8].tolist() for name, parameter
                          in trainer.accelerator.unwrap_model(trainer.model).named_parameters()},
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("report", help="each process writes REPORT.<process index>")
    parser.add_argument("--model", choices=sorted(MODELS), default="classifier")
    parser.add_argument("--batch", type=int, default=8, help="per process")
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--plain_trainer", action="store_true", help="skip declare_loss_scaling")
    parser.add_argument("--learning_rate", type=float, default=1e-12)
    options = parser.parse_args()
    report = run(options.model, options.batch, options.accumulate, options.report + ".run", options.plain_trainer,
                 options.learning_rate)
    with open(f"{options.report}.{report['process_index']}", "w") as file:
        json.dump(report, file)


if __name__ == "__main__":
    main()
