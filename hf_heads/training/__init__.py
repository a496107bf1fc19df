"""
The recipes as a library (the scripts in `recipes/` and the `hf-heads-*` commands call these `main` functions).

- `arguments`: argument dataclasses, `RecipeArgumentParser` (flags, YAML/JSON file + overriding flags, closest-name
  errors), `--config_overrides` parsing and checking.
- `data`, `lm_data`: sources (embedded BBC News with its fixed split, Hub datasets, local files), file and text checks.
- `labels`: labels to class ids / multi-hot vectors / numbers (`LabelSpace`); `splits`: validation carved when needed.
- `tokenizer`: tokenizers as saved (padding token, a token for empty texts, `model_max_length`).
- `recipe`: the `Recipe` base (checks, data, model, `Trainer`, save then extras); `outputs`: what a run writes.
- `output_dir`: the folder's checks (writable, room, model or checkpoints already there), the run lock, resume from the
  newest complete checkpoint; `checkpoints`: small checkpoints for frozen backbones (`SmallCheckpointsCallback`);
  `distributed`: CPU processes that train together, how each model's loss treats `num_items_in_batch`.
- `classification`, `language_modeling`, `search`: the three recipes; `metrics/`: `evaluate` modules loaded by path.
"""
