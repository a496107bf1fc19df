"""Loss scaling that stays right under gradient accumulation and data parallelism.

`Trainer` counts the labels of a whole optimizer step (every accumulated micro-batch, every process) as
`num_items_in_batch` and, when it believes the model divides its loss by that count, neither divides the loss by the
accumulation steps nor leaves the data-parallel average alone: it multiplies by the number of processes instead. It
believes so for every model whose `forward` takes `**kwargs`, unless the class says otherwise with
`accepts_loss_kwargs`. A model whose loss is a per-batch mean but which takes `**kwargs` (transformers' own
`GPT2ForSequenceClassification`, for one) then reports and back-propagates a loss k times too large with k
accumulation steps, and P times too large on P processes.

`declare_loss_scaling(model)` gives `Trainer` the truth for every model the recipes train, before it is built:

| model | loss | `num_items_in_batch` |
|---|---|---|
| `GPT2LMHeadModel`, `GaamGPT2LMHeadModel` | `ForCausalLMLoss`: sum over shifted targets / count | used |
| GPT-2 / GAAM-GPT2 sequence, token classification, question answering | per-batch mean | ignored |
| `headed` sequence and token classification | per-batch mean | ignored |

GPT-2's causal LM class is also told its loss type (`ForCausalLM`): its name does not reveal it, and without it
`Trainer` counts position 0 of every row as a target, which no causal LM predicts.
"""

from transformers import (
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
)

from ..models.gaam_gpt2 import GaamGPT2ForSequenceClassification
from ..models.headed import HeadedModelForSequenceClassification, HeadedModelForTokenClassification


# Whether each class's loss is normalised by `num_items_in_batch`; subclasses inherit the answer (the GAAM-GPT2
# token-classification, question-answering and LM classes use GPT-2's forward), unless they declare
# `accepts_loss_kwargs` themselves, which always wins.
LOSS_USES_NUM_ITEMS = {
    GPT2LMHeadModel: True,
    GPT2ForSequenceClassification: False,
    GPT2ForTokenClassification: False,
    GPT2ForQuestionAnswering: False,
    GaamGPT2ForSequenceClassification: False,  # a forward of its own (mean pooling), a per-batch mean loss
    HeadedModelForSequenceClassification: False,
    HeadedModelForTokenClassification: False,
}
CAUSAL_LM_CLASSES = (GPT2LMHeadModel,)


def loss_uses_num_items(model) -> bool | None:
    """True/False for the classes above and any class declaring `accepts_loss_kwargs`; None for other models."""
    for cls in type(model).__mro__:
        if "accepts_loss_kwargs" in vars(cls):
            return cls.accepts_loss_kwargs
        if cls in LOSS_USES_NUM_ITEMS:
            return LOSS_USES_NUM_ITEMS[cls]
    return None


def base_model_of(model):
    """The transformers model inside a PEFT wrapper (what `Trainer` inspects), or `model` itself."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def declare_loss_scaling(model) -> None:
    """
    Tells `Trainer` how `model` treats `num_items_in_batch` (an `accepts_loss_kwargs` attribute on the instance, which
    `Trainer` reads when it is built) and, for GPT-2 causal LMs, that the loss shifts its labels. Call it before
    `Trainer(model=model, ...)`. Models it does not know are left to `Trainer`'s own rule.
    """
    inner = base_model_of(model)
    uses = loss_uses_num_items(inner)
    if uses is not None:
        inner.accepts_loss_kwargs = uses
    if isinstance(inner, CAUSAL_LM_CLASSES) and getattr(inner, "loss_type", None) is None:
        inner.loss_type = "ForCausalLM"


def join_cpu_processes() -> bool:
    """
    Makes the processes of a multi-process launch on a machine without an accelerator train together (DDP over
    gloo) instead of each alone. Call it before `TrainingArguments` is built; returns whether it had to.

    `accelerate launch` with a MULTI_GPU config starts the processes with `torchrun` but tells them to use the CPU
    only through `--cpu` on its command line: its config's `use_cpu` is not passed on to them. `TrainingArguments`
    then finds no GPU and no CPU request, and every process trains on the whole data as if alone, all writing to the
    same folder. Selecting the CPU (what `--use_cpu` would do) is the only sensible reading of such a launch.
    """
    import os

    import torch

    launched_together = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not launched_together or torch.accelerator.is_available():
        return False
    os.environ["ACCELERATE_USE_CPU"] = "true"
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and int(os.environ.get("RANK", "0")) == 0:
        # accelerate turns FSDP on only over accelerator process groups (AcceleratorState: MULTI_GPU, MULTI_XPU, ...).
        print("FSDP needs an accelerator; on this CPU-only machine the processes train with DDP over gloo instead.")
    return True
