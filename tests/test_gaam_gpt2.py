"""GAAM-GPT2: GPT-2 equivalence, GAAM that truly trains, padding, causality, Auto classes and Hub folders."""

import json
import warnings

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
)

import hf_heads
from hf_heads import (
    GaamGPT2Config,
    GaamGPT2ForQuestionAnswering,
    GaamGPT2ForSequenceClassification,
    GaamGPT2ForTokenClassification,
    GaamGPT2LMHeadModel,
    GaamGPT2Model,
)


TINY = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=120, n_positions=64, bos_token_id=0, eos_token_id=0)
HEAD_CLASSES = {
    AutoModel: GaamGPT2Model,
    AutoModelForCausalLM: GaamGPT2LMHeadModel,
    AutoModelForSequenceClassification: GaamGPT2ForSequenceClassification,
    AutoModelForTokenClassification: GaamGPT2ForTokenClassification,
    AutoModelForQuestionAnswering: GaamGPT2ForQuestionAnswering,
}


def tiny_config(**overrides) -> GaamGPT2Config:
    return GaamGPT2Config(**{**TINY, "pad_token_id": 0, "num_labels": 3, **overrides})


def batch(seed=0, size=3, length=10):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, TINY["vocab_size"], (size, length), generator=generator)


@pytest.fixture
def gpt2_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**TINY)).eval()
    model.save_pretrained(tmp_path / "gpt2")
    return model, tmp_path / "gpt2"


def test_augment_with_a_closed_gate_equals_gpt2(gpt2_checkpoint):
    gpt2, path = gpt2_checkpoint
    gaam = GaamGPT2LMHeadModel.from_pretrained(path, gaam_placement="augment", gaam_gate_init=0.0).eval()
    ids = batch()
    torch.testing.assert_close(gaam(ids).logits, gpt2(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("model_class", list(HEAD_CLASSES.values()))
def test_gpt2_checkpoint_loads_every_weight(gpt2_checkpoint, model_class):
    gpt2, path = gpt2_checkpoint
    model = model_class.from_pretrained(path, num_labels=3)
    gpt2_weights = gpt2.transformer.state_dict()
    ours = (model if model_class is GaamGPT2Model else model.transformer).state_dict()
    for name, tensor in gpt2_weights.items():
        assert torch.equal(ours[name], tensor), name
    new = {name for name in ours if name not in gpt2_weights}
    assert new and all(".gaam" in name for name in new)


def test_loading_reports_the_new_gaam_parameters(gpt2_checkpoint):
    _, path = gpt2_checkpoint
    _, info = GaamGPT2LMHeadModel.from_pretrained(path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == sorted(
        f"transformer.h.{i}.{name}" for i in range(2) for name in ("gaam.mean_offsets", "gaam.c", "gaam_gate.weight")
    )


def test_lm_is_causal():
    torch.manual_seed(0)
    model = GaamGPT2LMHeadModel(tiny_config(gaam_placement="replace", gaam_layers=[0])).eval()
    ids = batch(length=12)
    changed = ids.clone()
    changed[:, 7:] = batch(seed=1, length=5)
    torch.testing.assert_close(model(changed).logits[:, :7], model(ids).logits[:, :7])
    assert not torch.allclose(model(changed).logits[:, 7:], model(ids).logits[:, 7:])


def test_lm_generates():
    model = GaamGPT2LMHeadModel(tiny_config()).eval()
    generated = model.generate(batch(size=1, length=4), max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert generated.shape == (1, 10)


def test_causal_lm_refuses_the_sequence_axis():
    with pytest.raises(ValueError, match="gaam_norm_axis.*sequence.*future"):
        GaamGPT2LMHeadModel(tiny_config(gaam_norm_axis="sequence"))


@pytest.mark.parametrize(
    "overrides",
    [
        dict(gaam_placement="augment", gaam_norm_axis="features"),
        dict(gaam_placement="augment", gaam_norm_axis="sequence"),
        dict(gaam_placement="replace", gaam_norm_axis="sequence", classifier_pooling="mean"),
        dict(gaam_placement="replace", gaam_norm_axis="features", gaam_layers=[1]),
    ],
)
@pytest.mark.parametrize("side", ["left", "right"])
def test_classifier_prediction_does_not_depend_on_padding(overrides, side):
    torch.manual_seed(0)
    model = GaamGPT2ForSequenceClassification(tiny_config(**overrides)).eval()
    with torch.no_grad():  # open the gates so GAAM matters in "augment" mode
        for block in model.transformer.h:
            if getattr(block, "gaam_gate", None) is not None:
                block.gaam_gate.weight.fill_(5.0)
    alone = batch(size=1, length=7)
    other = batch(seed=3, size=1, length=11)
    pad = torch.zeros(1, 4, dtype=torch.long)
    padded = torch.cat([pad, alone], 1) if side == "left" else torch.cat([alone, pad], 1)
    mask = (torch.arange(11) >= 4) if side == "left" else (torch.arange(11) < 7)
    position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0).unsqueeze(0)
    inputs = torch.cat([padded, other])
    attention_mask = torch.stack([mask.long(), torch.ones(11, dtype=torch.long)])
    position_ids = torch.cat([position_ids, torch.arange(11).unsqueeze(0)])
    logits = model(input_ids=inputs, attention_mask=attention_mask, position_ids=position_ids).logits
    torch.testing.assert_close(logits[0], model(input_ids=alone).logits[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits[1], model(input_ids=other).logits[0], rtol=1e-4, atol=1e-5)


def _train_one_step(model, ids, labels, lr=1e-2):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


@pytest.mark.parametrize("placement", ["augment", "replace"])
@pytest.mark.parametrize("axis", ["features", "sequence"])
def test_every_gaam_parameter_receives_gradient(placement, axis):
    torch.manual_seed(0)
    model = GaamGPT2ForSequenceClassification(
        tiny_config(gaam_placement=placement, gaam_norm_axis=axis, classifier_pooling="mean")
    )
    ids, labels = batch(), torch.tensor([0, 1, 2])
    if placement == "augment":
        _train_one_step(model, ids, labels)
        assert all(block.gaam_gate.weight.item() not in (0.0, 1.0) for block in model.transformer.h)
    model(input_ids=ids, labels=labels).loss.backward()
    gaam_parameters = {n: p for n, p in model.named_parameters() if ".gaam" in n}
    assert len(gaam_parameters) == (6 if placement == "augment" else 4)
    for name, parameter in gaam_parameters.items():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_gaam_changes_outputs():
    torch.manual_seed(0)
    model = GaamGPT2ForSequenceClassification(tiny_config(gaam_placement="replace", classifier_pooling="mean")).eval()
    ids = batch()
    before = model(input_ids=ids).logits
    with torch.no_grad():
        model.transformer.h[0].gaam.mean_offsets.add_(0.5)
    assert not torch.allclose(before, model(input_ids=ids).logits)


@pytest.mark.parametrize("placement", ["augment", "replace"])
def test_different_gaam_settings_train_differently(placement):
    """The notebook's failure: three GAAM settings gave bit-identical losses because GAAM's output was dropped."""
    ids, labels = batch(size=4), torch.tensor([0, 1, 2, 0])
    second_losses = []
    for heads, gaussians in [(2, 3), (4, 8)]:
        torch.manual_seed(0)
        config = tiny_config(
            gaam_placement=placement, gaam_num_heads=heads, gaam_num_gaussians=gaussians, classifier_pooling="mean"
        )
        model = GaamGPT2ForSequenceClassification(config)
        # The same backbone weights for both settings: only GAAM differs.
        torch.manual_seed(1)
        for parameter in model.transformer.parameters():
            if parameter.dim() > 0 and parameter.numel() > 64:
                torch.nn.init.normal_(parameter, std=0.02)
        torch.nn.init.normal_(model.score.weight, std=0.02)
        _train_one_step(model, ids, labels)
        second_losses.append(model(input_ids=ids, labels=labels).loss.item())
    assert second_losses[0] != second_losses[1]


def test_replace_everywhere_with_last_pooling_warns():
    with pytest.warns(UserWarning, match="classifier_pooling='mean'"):
        GaamGPT2ForSequenceClassification(tiny_config(gaam_placement="replace"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GaamGPT2ForSequenceClassification(tiny_config(gaam_placement="replace", classifier_pooling="mean"))


@pytest.mark.parametrize("auto_class", list(HEAD_CLASSES))
def test_auto_round_trip_gives_identical_outputs(tmp_path, auto_class):
    torch.manual_seed(0)
    model = auto_class.from_config(tiny_config(gaam_norm_axis="features")).eval()
    assert isinstance(model, HEAD_CLASSES[auto_class])
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "gaam_gpt2" and auto_class.__name__ in config["auto_map"]
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    reloaded = auto_class.from_pretrained(tmp_path).eval()
    ids = batch()
    for key, value in model(input_ids=ids).items():
        if torch.is_tensor(value):
            torch.testing.assert_close(reloaded(input_ids=ids)[key], value, rtol=0, atol=0)


def test_auto_config_knows_gaam_gpt2():
    config = AutoConfig.for_model("gaam_gpt2", gaam_num_heads=8)
    assert isinstance(config, GaamGPT2Config) and config.gaam_num_heads == 8


def test_saved_folder_loads_without_hf_heads(tmp_path, run_without_hf_heads):
    torch.manual_seed(0)
    model = GaamGPT2ForSequenceClassification(tiny_config(gaam_norm_axis="sequence")).eval()
    model.save_pretrained(tmp_path / "model")
    ids = batch()
    expected = model(input_ids=ids).logits
    torch.save({"ids": ids}, tmp_path / "ids.pt")
    output = run_without_hf_heads(
        f"""
        import torch
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
        assert "hf_heads" not in type(model).__module__
        ids = torch.load({str(tmp_path / "ids.pt")!r})["ids"]
        torch.save(model.eval()(input_ids=ids).logits, {str(tmp_path / "logits.pt")!r})
        print(type(model).__name__)
        """
    )
    assert "GaamGPT2ForSequenceClassification" in output
    # A saved folder carries no fused kernel, so it runs GAAM's exact PyTorch path: equal up to float32 rounding.
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, rtol=1e-5, atol=1e-6)


def test_one_gaam_class_inside_the_package():
    model = GaamGPT2Model(tiny_config())
    assert isinstance(model.h[0].gaam, hf_heads.GaussianAdaptiveAttention)


@pytest.mark.parametrize(
    "overrides,field",
    [
        (dict(gaam_placement="after"), "gaam_placement"),
        (dict(gaam_norm_axis=1), "gaam_norm_axis"),
        (dict(gaam_num_heads=0), "gaam_num_heads"),
        (dict(gaam_num_gaussians=-2), "gaam_num_gaussians"),
        (dict(gaam_eps=0.0), "gaam_eps"),
        (dict(gaam_normalization="softmax"), "gaam_normalization"),
        (dict(gaam_gate_init=float("nan")), "gaam_gate_init"),
        (dict(classifier_pooling="first"), "classifier_pooling"),
    ],
)
def test_bad_config_values_fail_at_construction(overrides, field):
    # Wrong types are caught by transformers' strict dataclass validation, wrong values by GaamGPT2Config.
    with pytest.raises((ValueError, StrictDataclassError), match=field):
        tiny_config(**overrides)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(gaam_layers=[0, 5]), r"`gaam_layers`=\[0, 5\] must list distinct block indices in \[0, 1\]"),
        (dict(gaam_layers=[1, 1]), r"`gaam_layers`=\[1, 1\] must list distinct"),
        (dict(gaam_num_heads=20), r"`gaam_num_heads`=20 splits n_embd=32 features into chunks of 1"),
    ],
)
def test_fields_that_do_not_fit_the_sizes_fail_when_the_model_is_built(overrides, message):
    config = tiny_config(**overrides)  # a config may hold sizes that are filled in later, as GPT2Config allows
    with pytest.raises(ValueError, match=message):
        GaamGPT2Model(config)


def test_gpt2_sequence_classifier_checkpoint_keeps_its_score_head(tmp_path):
    torch.manual_seed(0)
    gpt2 = GPT2ForSequenceClassification(GPT2Config(**TINY, num_labels=3, pad_token_id=0)).eval()
    gpt2.save_pretrained(tmp_path)
    ours = GaamGPT2ForSequenceClassification.from_pretrained(tmp_path, gaam_gate_init=0.0).eval()
    assert torch.equal(ours.score.weight, gpt2.score.weight)
    ids = batch()
    torch.testing.assert_close(ours(input_ids=ids).logits, gpt2(input_ids=ids).logits)
