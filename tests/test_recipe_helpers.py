"""What the recipes share: config overrides (the output folder's checks: tests/test_runs.py)."""

from hf_heads.training.arguments import parse_overrides


def test_overrides_read_json_values_and_keep_lists_whole():
    assert parse_overrides("gaam_layers=[0,1],n_layer=2,gaam_eps=1e-6,scale_attn_weights=false,name=x") == {
        "gaam_layers": [0, 1], "n_layer": 2, "gaam_eps": 1e-6, "scale_attn_weights": False, "name": "x"
    }
    assert parse_overrides(None) == {} and parse_overrides("") == {}
