"""Small checkpoints for runs whose backbone does not train (a frozen backbone, LoRA).

A `Trainer` checkpoint normally holds a full copy of the weights. When most of them are frozen, every checkpoint
repeats the same backbone: a 3,000-parameter head on a frozen 22M-parameter encoder, saved each epoch for 30 epochs, is
30 copies of weights that never change. `SmallCheckpointsCallback` keeps in each intermediate checkpoint only what
trains (and the buffers), plus `frozen_weights.json`: where the frozen weights came from and their SHA-256. Resuming
loads the trained part over the frozen weights already in memory (`Trainer` loads checkpoints non-strictly), which is
exact as long as those are the same weights; the hash makes sure they are, and resuming onto other frozen weights is
refused, naming both. The final folder (`Trainer.save_model` into `output_dir`) is not a checkpoint and stays a full,
self-sufficient model.
"""

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .errors import RecipeError


REFERENCE_NAME = "frozen_weights.json"
WEIGHTS_NAME = "model.safetensors"


def frozen_parameter_names(model) -> set[str]:
    """State-dict names of the parameters that do not train (tied aliases included)."""
    return {name for name, parameter in model.named_parameters(remove_duplicate=False) if not parameter.requires_grad}


def frozen_weights_hash(model) -> str:
    """SHA-256 over the frozen parameters' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    parameters = dict(model.named_parameters())
    for name in sorted(set(parameters) & frozen_parameter_names(model)):
        tensor = parameters[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def weights_source(model) -> str:
    """Where the model's weights were loaded from, as its config records it."""
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", "") or "(built in memory)"


def check_frozen_weights(checkpoint_dir, model) -> None:
    """
    Refuses to resume from `checkpoint_dir` onto frozen weights other than the ones it was trained on: the checkpoint
    does not hold them, so resuming would silently combine its trained part with another backbone.
    """
    reference_path = Path(checkpoint_dir) / REFERENCE_NAME
    if not reference_path.is_file():
        return  # a full checkpoint: it carries every weight itself
    reference = json.loads(reference_path.read_text())
    current = frozen_weights_hash(model)
    if current != reference["sha256"]:
        raise RecipeError(
            f"Checkpoint {checkpoint_dir} was trained on the frozen weights of {reference['source']} "
            f"(sha256 {reference['sha256'][:12]}), but the model being resumed holds other frozen weights "
            f"({weights_source(model)}, sha256 {current[:12]}). Load the backbone the run started from, or start a "
            "new run."
        )


class SmallCheckpointsCallback(TrainerCallback):
    """
    Intermediate checkpoints without the frozen weights, and a hash-checked reference to them (see the module
    docstring). Add it to any `Trainer`: `Trainer(..., callbacks=[SmallCheckpointsCallback()])`. Nothing changes for a
    model without frozen parameters.
    """

    def __init__(self):
        self.frozen: set[str] = set()
        self.reference: dict | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.frozen = frozen_parameter_names(model)
        if not self.frozen:
            return
        self.reference = {
            "source": weights_source(model),
            "sha256": frozen_weights_hash(model),
            "frozen_parameters": len(self.frozen),
        }
        resumed_from = _resumed_checkpoint(args, state)
        if resumed_from is not None:
            check_frozen_weights(resumed_from, model)

    def on_save(self, args, state, control, **kwargs):
        if not self.frozen or not args.should_save:
            return
        folder = _saved_checkpoint(Path(args.output_dir), state.global_step)
        if folder is None:
            return
        weights = folder / WEIGHTS_NAME
        if weights.is_file():  # a PEFT checkpoint holds its adapter only, already small
            trained = {name: tensor for name, tensor in load_file(weights).items() if name not in self.frozen}
            partial = weights.with_name(f"{WEIGHTS_NAME}.partial")
            save_file(trained, partial, metadata={"format": "pt"})
            os.replace(partial, weights)  # a kill leaves either the full file or the small one, never half of one
        (folder / REFERENCE_NAME).write_text(json.dumps(self.reference, indent=2))


def _saved_checkpoint(output_dir: Path, step: int) -> Path | None:
    """The checkpoint just written: `output_dir/checkpoint-N`, or a search trial's `output_dir/<run>/checkpoint-N`."""
    name = f"{PREFIX_CHECKPOINT_DIR}-{step}"
    candidates = [output_dir / name] + sorted(output_dir.glob(f"*/{name}"), key=lambda path: path.stat().st_mtime,
                                              reverse=True)
    return next((path for path in candidates if path.is_dir()), None)


def _resumed_checkpoint(args, state) -> str | None:
    """The checkpoint `Trainer` resumed from: the one named in the arguments, else `output_dir`'s at this step."""
    if state.global_step == 0:
        return None
    named = getattr(args, "resume_from_checkpoint", None)
    if isinstance(named, str) and Path(named).is_dir():
        return named
    folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
    return str(folder) if folder.is_dir() else None
