"""Trains every head on every backbone, and every GAAM-GPT2 task class, a few steps with `Trainer` under distributed
data parallel with `ddp_find_unused_parameters=False`; each process writes what it saw, as JSON. Every model is built
from a tiny configuration: nothing comes from the Hub.

Launched by tests/test_ddp_every_head.py with the shipped two-process CPU config, as a user launches a recipe:

    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml tests/ddp_probe.py REPORT --grid full|sample

Without unused-parameter detection DDP raises at the step after one in which a trainable parameter got no gradient,
so each case trains three steps. A case's error is recorded, not raised, so that one launch reports every case; the
processes stay in step because every case fails or passes alike on both. A head with a parameter it never uses is
registered here as a user registers their own: the grid finds it in the registry like any other head, and it is the
one that must fail.
"""

import argparse
import functools
import hashlib
import itertools
import json
import tempfile
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from transformers import (
    BertConfig,
    GPT2Config,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    RobertaConfig,
    Trainer,
    TrainingArguments,
)

import hf_heads
from hf_heads.models.gaam_gpt2 import modeling_gaam_gpt2
from hf_heads.models.gaam_gpt2.configuration_gaam_gpt2 import CLASSIFIER_POOLINGS, GAAM_PLACEMENTS
from hf_heads.models.headed.configuration_headed import DAAM_VARIANTS, HEAD_POOLINGS
from hf_heads.models.headed.heads import HEADS, MeanHead
from hf_heads.training.distributed import declare_loss_scaling, join_cpu_processes


STEPS, BATCH, LENGTH, VOCAB, LABELS = 3, 2, 8, 50, 3
DEAD_HEAD = "dead_parameter"
SMALL = dict(num_hidden_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=32, vocab_size=VOCAB)
GPT2_SMALL = dict(n_layer=2, n_embd=16, n_head=2, vocab_size=VOCAB, n_positions=LENGTH, pad_token_id=0)
BACKBONES = {
    "bert": lambda: BertConfig(**SMALL, max_position_embeddings=LENGTH, type_vocab_size=2),
    "roberta": lambda: RobertaConfig(**SMALL, max_position_embeddings=LENGTH + 2, type_vocab_size=1, pad_token_id=1),
    "gpt2": lambda: GPT2Config(**GPT2_SMALL),
    **{
        f"gaam_gpt2_{placement}": lambda placement=placement: hf_heads.GaamGPT2Config(
            **GPT2_SMALL, gaam_placement=placement
        )
        for placement in GAAM_PLACEMENTS
    },
    "llama": lambda: LlamaConfig(**SMALL, num_key_value_heads=1, max_position_embeddings=LENGTH),
}
# Choices that change what a head builds or computes; a case is kept per setting that makes a different head.
HEAD_OPTIONS = {"head_pooling": HEAD_POOLINGS, "daam_variant": DAAM_VARIANTS}
HEADED_MODELS = (hf_heads.HeadedModelForSequenceClassification, hf_heads.HeadedModelForTokenClassification)


class DeadParameterHead(MeanHead):
    """A head with a parameter its forward never uses: what DDP without unused-parameter detection refuses."""

    def __init__(self, config, task):
        super().__init__(config, task)
        self.unused = nn.Parameter(torch.zeros(config.backbone_config.hidden_size))

    def init_parameters(self):
        nn.init.zeros_(self.unused)


@dataclass
class Case:
    build: Callable[[], nn.Module]
    model_class: str
    kind: str  # the head type of a headed model, the GAAM placement of a GAAM-GPT2 task model
    setting: dict  # the options that vary among this kind's cases
    backbone: str | None = None  # of a headed model

    @property
    def name(self) -> str:
        setting = ",".join(f"{name}={value}" for name, value in self.setting.items())
        return "/".join(part for part in (self.model_class, self.kind, setting, self.backbone) if part)


def headed(model_class, backbone: str, head_type: str, options: dict) -> nn.Module:
    config = hf_heads.HeadedConfig(
        backbone_config=BACKBONES[backbone](), head_type=head_type, num_labels=LABELS, **options
    )
    return model_class(config)


def gaam_gpt2(model_class, placement: str, options: dict) -> nn.Module:
    return model_class(hf_heads.GaamGPT2Config(**GPT2_SMALL, gaam_placement=placement, num_labels=LABELS, **options))


def distinct_settings(build: Callable[[dict], nn.Module], options: dict) -> list[dict]:
    """
    The settings of `options` (name -> choices) that build different models, each holding only the options that vary
    among them (the rest keep their defaults): settings that give the same trainable parameters and the same outputs
    on the same input are one case, so a head that ignores `head_pooling` runs once.
    """
    kept, seen = [], set()
    ids = torch.randint(2, VOCAB, (2, LENGTH), generator=torch.Generator().manual_seed(1))
    for values in itertools.product(*options.values()):
        setting = dict(zip(options, values))
        torch.manual_seed(0)
        model = build(setting).eval()
        with torch.no_grad():
            outputs = model(input_ids=ids)
        logits = outputs.logits if hasattr(outputs, "logits") else outputs.start_logits
        fingerprint = (
            tuple((name, tuple(p.shape)) for name, p in model.named_parameters() if p.requires_grad),
            logits.numpy().tobytes(),
        )
        if fingerprint not in seen:
            seen.add(fingerprint)
            kept.append(setting)
    varying = [name for name in options if len({setting[name] for setting in kept}) > 1]
    return [{name: setting[name] for name in varying} for setting in kept]


def headed_cases() -> list[Case]:
    """Every registered head, for every task it serves (asked of the registry), on every backbone."""
    cases = []
    for model_class, head_type in itertools.product(HEADED_MODELS, HEADS):
        if model_class.task not in HEADS[head_type].tasks:
            continue
        settings = distinct_settings(functools.partial(headed, model_class, "gpt2", head_type), HEAD_OPTIONS)
        for setting, backbone in itertools.product(settings, BACKBONES):
            build = functools.partial(headed, model_class, backbone, head_type, setting)
            cases.append(Case(build, model_class.__name__, head_type, setting, backbone))
    return cases


def gaam_gpt2_task_classes() -> list[type]:
    """GAAM-GPT2's own task models: every class the modelling file exports on top of the base model."""
    exported = (getattr(modeling_gaam_gpt2, name) for name in modeling_gaam_gpt2.__all__)
    return [
        cls for cls in exported
        if isinstance(cls, type) and issubclass(cls, modeling_gaam_gpt2.GaamGPT2PreTrainedModel)
        and cls is not modeling_gaam_gpt2.GaamGPT2PreTrainedModel and cls is not hf_heads.GaamGPT2Model
    ]


def gaam_gpt2_cases() -> list[Case]:
    cases = []
    for model_class, placement in itertools.product(gaam_gpt2_task_classes(), GAAM_PLACEMENTS):
        options = {"classifier_pooling": CLASSIFIER_POOLINGS}
        for setting in distinct_settings(functools.partial(gaam_gpt2, model_class, placement), options):
            build = functools.partial(gaam_gpt2, model_class, placement, setting)
            cases.append(Case(build, model_class.__name__, placement, setting))
    return cases


def grid(which: str) -> list[Case]:
    """
    "full": every case. "sample": every head, task and setting once, the backbones taken in turn (each at least once
    when there are more of those than backbones); every GAAM-GPT2 task class and setting once, the placements in turn.
    """
    headed, gaam = headed_cases(), gaam_gpt2_cases()
    if which == "full":
        return headed + gaam
    per_head, per_class = {}, {}
    for case in headed:  # the backbones of one head and setting, in `BACKBONES` order
        per_head.setdefault((case.model_class, case.kind, tuple(case.setting.items())), []).append(case)
    for case in gaam:  # the placements of one class and setting
        per_class.setdefault((case.model_class, tuple(case.setting.items())), []).append(case)
    return [cases[i % len(cases)] for group in (per_head, per_class) for i, cases in enumerate(group.values())]


# --- the data: what each task's model takes -------------------------------------------------------------------------

def batch_kind(model) -> str:
    if isinstance(model, GPT2LMHeadModel):
        return "causal lm"
    if isinstance(model, GPT2ForQuestionAnswering):
        return "spans"
    if isinstance(model, (GPT2ForTokenClassification, hf_heads.HeadedModelForTokenClassification)):
        return "token labels"
    if isinstance(model, (GPT2ForSequenceClassification, hf_heads.HeadedModelForSequenceClassification)):
        return "sequence labels"
    raise TypeError(f"No training rows for {type(model).__name__}: teach tests/ddp_probe.py its task.")


class Rows(torch.utils.data.Dataset):
    """Right-padded rows of random tokens (lengths 5 to 8) with the labels `kind` takes; segment ids where used."""

    def __init__(self, kind: str, backbone_config):
        generator = torch.Generator().manual_seed(0)
        size = 2 * BATCH * STEPS  # both processes, every step
        self.ids = torch.randint(2, VOCAB, (size, LENGTH), generator=generator)
        lengths = torch.randint(5, LENGTH + 1, (size,), generator=generator)
        self.mask = (torch.arange(LENGTH) < lengths[:, None]).long()
        self.ids[self.mask == 0] = 0
        self.kind = kind
        self.segments = getattr(backbone_config, "type_vocab_size", 1) > 1
        self.labels = torch.randint(0, LABELS, (size, LENGTH), generator=generator)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        row = {"input_ids": self.ids[i], "attention_mask": self.mask[i]}
        if self.segments:
            row["token_type_ids"] = (torch.arange(LENGTH) >= LENGTH // 2).long()
        unlabelled = self.mask[i] == 0
        if self.kind == "causal lm":
            row["labels"] = self.ids[i].masked_fill(unlabelled, -100)
        elif self.kind == "token labels":
            row["labels"] = self.labels[i].masked_fill(unlabelled, -100)
        elif self.kind == "sequence labels":
            row["labels"] = self.labels[i, 0]
        else:
            row["start_positions"], row["end_positions"] = torch.tensor(1), torch.tensor(3)
        return row


# --- one case -------------------------------------------------------------------------------------------------------

def checksum(model) -> str:
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        digest.update(name.encode())
        digest.update(parameter.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train(case: Case, output_dir: str) -> dict:
    torch.manual_seed(0)
    model = case.build()
    declare_loss_scaling(model)  # as the recipes do
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=BATCH, max_steps=STEPS, learning_rate=1e-2,
        lr_scheduler_type="constant", ddp_find_unused_parameters=False, ddp_timeout=120, save_strategy="no",
        logging_strategy="no", report_to="none", disable_tqdm=True, seed=0,
    )
    backbone_config = getattr(model.config, "backbone_config", model.config)
    trainer = Trainer(model=model, args=args, train_dataset=Rows(batch_kind(model), backbone_config))
    report = {"case": case.name, "model_class": case.model_class, "kind": case.kind, "backbone": case.backbone}
    try:
        trainer.train()
        report["error"] = None
    except Exception as error:  # recorded: the test names every case that failed, with its reason
        report["error"] = f"{type(error).__name__}: {error}"[:600]
    wrapped = trainer.model_wrapped
    report.update(
        world_size=torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        backend=torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        wrapper=type(wrapped).__name__,
        find_unused_parameters=getattr(wrapped, "find_unused_parameters", None),
        steps=trainer.state.global_step,
        trainable=len(before),
        unchanged=[name for name, p in model.named_parameters() if name in before and torch.equal(p, before[name])],
        checksum=checksum(model),
    )
    return report


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("report", help="each process writes REPORT.<process index>")
    parser.add_argument("--grid", choices=("full", "sample"), default="sample")
    options = parser.parse_args()
    hf_heads.register_head(DEAD_HEAD, DeadParameterHead)  # here, so that importing this file registers nothing
    join_cpu_processes()  # as the recipes do
    reports = []
    with tempfile.TemporaryDirectory() as output_dir:
        for case in grid(options.grid):
            reports.append(train(case, output_dir))
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    with open(f"{options.report}.{rank}", "w") as file:
        json.dump(reports, file, indent=1)


if __name__ == "__main__":
    main()
