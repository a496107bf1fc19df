"""The output folder: refused when it holds a model, resumed from a complete checkpoint, written model first."""

import json
from pathlib import Path


SAVED_MODEL_FILES = ("config.json", "model.safetensors", "adapter_config.json")


def refuse_existing_model(output_dir, overwrite: bool, resuming: bool) -> None:
    """A folder that already holds a model is never written over unless the user says so."""
    output_dir = Path(output_dir)
    saved = [name for name in SAVED_MODEL_FILES if (output_dir / name).exists()]
    if saved and not overwrite and not resuming:
        raise ValueError(
            f"`--output_dir` {output_dir} already holds a model ({', '.join(saved)}); choose another folder, or pass "
            "`--overwrite_output_dir` to replace it (or `--resume_from_checkpoint` to continue)."
        )


def resolve_resume_checkpoint(value: str | None, output_dir) -> str | None:
    """
    `--resume_from_checkpoint`: a checkpoint folder, or `true`/`last` for the newest *complete* checkpoint in
    `output_dir` (one whose `trainer_state.json` was written: a run killed while saving leaves a partial folder).
    """
    if value is None:
        return None
    if value.lower() in ("true", "last"):
        complete = [
            path for path in Path(output_dir).glob("checkpoint-*")
            if path.name.split("-")[-1].isdigit() and (path / "trainer_state.json").is_file()
        ]
        if not complete:
            raise ValueError(
                f"`--resume_from_checkpoint`={value!r}: `--output_dir` {output_dir} holds no complete checkpoint "
                "(checkpoint-N with trainer_state.json)."
            )
        return str(max(complete, key=lambda path: int(path.name.split("-")[-1])))
    if not (Path(value) / "trainer_state.json").is_file():
        raise ValueError(
            f"`--resume_from_checkpoint`={value!r} is not a complete checkpoint folder (no trainer_state.json); give "
            "a checkpoint-N folder, or `true` for the newest one in `--output_dir`."
        )
    return value


def save_model_and_results(trainer, tokenizer, metrics: dict, model=None) -> Path:
    """
    What must survive anything that follows: weights (with their code), tokenizer, and metrics (`all_results.json`,
    through `Trainer.save_metrics`). `model` replaces the trainer's model when the folder should hold another form of
    it (a LoRA model merged into its base).
    """
    output_dir = Path(trainer.args.output_dir)
    if model is None:
        trainer.save_model()
    elif trainer.is_world_process_zero():
        model.save_pretrained(output_dir)
    if trainer.is_world_process_zero():
        # `Trainer.save_model` pickles the arguments beside the weights; a published folder holds no pickles (the
        # card lists the arguments), so only checkpoints, which resume needs them for, keep theirs.
        (output_dir / "training_args.bin").unlink(missing_ok=True)
        tokenizer.save_pretrained(output_dir)
        trainer.save_metrics("all", metrics, combined=False)
    return output_dir


def print_output_folder(output_dir) -> str:
    """The run's last words: where its outputs are and what they are."""
    output_dir = Path(output_dir).resolve()
    lines = [f"Outputs in {output_dir}:"]
    for path in sorted(output_dir.iterdir()):
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
        lines.append(f"  {path.name}{'/' if path.is_dir() else ''}  ({size / 1e6:.2f} MB)")
    text = "\n".join(lines)
    print(text)
    return text


def write_json(path: Path, values: dict) -> None:
    Path(path).write_text(json.dumps(values, indent=2))
