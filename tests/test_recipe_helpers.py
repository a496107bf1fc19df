"""What the recipes share: config overrides, output-folder safety, resume resolution."""

import pytest

from hf_heads.training.arguments import parse_overrides
from hf_heads.training.outputs import refuse_existing_model, resolve_resume_checkpoint


def test_overrides_read_json_values_and_keep_lists_whole():
    assert parse_overrides("gaam_layers=[0,1],n_layer=2,gaam_eps=1e-6,scale_attn_weights=false,name=x") == {
        "gaam_layers": [0, 1], "n_layer": 2, "gaam_eps": 1e-6, "scale_attn_weights": False, "name": "x"
    }
    assert parse_overrides(None) == {} and parse_overrides("") == {}


def test_a_folder_with_a_model_is_refused_unless_overwriting_or_resuming(tmp_path):
    refuse_existing_model(tmp_path, overwrite=False, resuming=False)  # empty: fine
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(ValueError, match=r"already holds a model \(model.safetensors\)"):
        refuse_existing_model(tmp_path, overwrite=False, resuming=False)
    refuse_existing_model(tmp_path, overwrite=True, resuming=False)
    refuse_existing_model(tmp_path, overwrite=False, resuming=True)


def test_resume_true_picks_the_newest_complete_checkpoint(tmp_path):
    for step, complete in ((10, True), (20, True), (30, False), (100, True)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-100" / "trainer_state.json").unlink()  # a kill while saving: incomplete
    assert resolve_resume_checkpoint("true", tmp_path) == str(tmp_path / "checkpoint-20")
    assert resolve_resume_checkpoint(str(tmp_path / "checkpoint-10"), tmp_path) == str(tmp_path / "checkpoint-10")
    assert resolve_resume_checkpoint(None, tmp_path) is None
    with pytest.raises(ValueError, match="is not a complete checkpoint folder"):
        resolve_resume_checkpoint(str(tmp_path / "checkpoint-30"), tmp_path)
