"""What a run writes into its output folder, model first (the folder's checks, lock and resume: `output_dir`)."""

from pathlib import Path


def save_model_and_results(trainer, tokenizer, metrics: dict) -> Path:
    """
    What must survive anything that follows: weights (with their code), tokenizer, and metrics (`all_results.json`,
    through `Trainer.save_metrics`). Every process calls it: `Trainer.save_model` gathers sharded weights (FSDP,
    DeepSpeed ZeRO-3) before the main process writes them.
    """
    output_dir = Path(trainer.args.output_dir)
    # Not pushed from here (what `save_model` does with `--push_to_hub`): the run pushes once, at the end, with the
    # card and the pictures.
    trainer.save_model(_internal_call=True)
    if trainer.is_world_process_zero():
        # `Trainer.save_model` also pickles the arguments beside the weights; the card hook (`hf_heads.hub.
        # use_model_card`) replaces that file with `training_args.json` before anything can be uploaded.
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

