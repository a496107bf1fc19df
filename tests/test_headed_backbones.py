"""`headed` models on every backbone family: inputs pass through, padding does not change a row's prediction, no
parameter is dead, folders round-trip (also where `hf_heads` cannot be imported, a GAAM-GPT2 backbone included)."""

import itertools

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    GPT2Config,
    LlamaConfig,
    RobertaConfig,
)

import hf_heads
from hf_heads import (
    GaamGPT2Config,
    HeadedConfig,
    HeadedModelForSequenceClassification,
    HeadedModelForTokenClassification,
)
from hf_heads.features import CachedFeaturesCollator, cache_backbone_features
from hf_heads.gaam import layer as gaam_layer


SMALL = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64, vocab_size=100)
BACKBONES = {
    "bert": lambda: BertConfig(**SMALL, max_position_embeddings=64, type_vocab_size=2),
    "roberta": lambda: RobertaConfig(**SMALL, max_position_embeddings=64, pad_token_id=1),
    "gpt2": lambda: GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64),
    # GAAM's gate opened, so that GAAM changes the backbone's states.
    "gaam_gpt2": lambda: GaamGPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64, gaam_num_heads=2
    ),
    # GAAM in place of attention in every block (no KV attention at all).
    "gaam_gpt2_replace": lambda: GaamGPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64, gaam_num_heads=2, gaam_placement="replace"
    ),
    "llama": lambda: LlamaConfig(**SMALL, num_key_value_heads=2, max_position_embeddings=64),
}
DECODERS = ("gpt2", "gaam_gpt2", "gaam_gpt2_replace", "llama")
SEQUENCE_HEADS = [
    dict(head_type="mean"),
    dict(head_type="last_token"),
    dict(head_type="attention", head_pooling="mean"),
    dict(head_type="attention", head_pooling="last"),
    dict(head_type="attention", head_pooling="attention"),
    dict(head_type="gaam_layers", gaam_num_gaussians=3),
    dict(head_type="scalar_mix"),
    dict(head_type="daam", daam_conv_channels=8),
    dict(head_type="daam", daam_variant="gqdaam", daam_conv_channels=8),
]
TOKEN_HEADS = [dict(head_type="linear")] + [
    dict(head_type="attention", head_pooling=pooling) for pooling in ("mean", "last", "attention")
]


def name_of(head):
    return "-".join(map(str, head.values()))


def open_gaam_gates(model):
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "gaam_gate" in name:
                parameter.fill_(0.5)
    return model


def make(backbone, model_class=HeadedModelForSequenceClassification, num_labels=3, **head):
    torch.manual_seed(0)
    config = HeadedConfig(backbone_config=BACKBONES[backbone](), num_labels=num_labels, head_dropout=0.0, **head)
    return open_gaam_gates(model_class(config)).eval()


def plain_backbone(model):
    """The backbone alone, as `AutoModel` builds it, with the headed model's weights."""
    plain = AutoModel.from_config(model.config.backbone_config).eval()
    plain.load_state_dict(model.backbone.state_dict())
    return plain


def tokens(seed=0, size=2, length=9):
    return torch.randint(2, 100, (size, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("model_class,head", [
    (HeadedModelForSequenceClassification, dict(head_type="mean")),
    (HeadedModelForSequenceClassification, dict(head_type="gaam_layers", gaam_num_gaussians=3)),  # reads every layer
    (HeadedModelForTokenClassification, dict(head_type="linear")),
])
def test_hidden_states_and_attentions_come_back_when_asked_as_from_the_plain_backbone(model_class, head):
    torch.manual_seed(0)
    config = HeadedConfig(
        backbone_config=BACKBONES["bert"](), num_labels=3, head_dropout=0.0, attn_implementation="eager", **head
    )
    model = model_class(config).eval()
    plain = plain_backbone(model)
    plain.set_attn_implementation("eager")
    expected = plain(input_ids=tokens(), output_hidden_states=True, output_attentions=True)
    outputs = model(input_ids=tokens(), output_hidden_states=True, output_attentions=True)
    for name in ("hidden_states", "attentions"):
        assert len(outputs[name]) == len(expected[name]) > 0
        for ours, theirs in zip(outputs[name], expected[name]):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    # As transformers' classifiers: not unless asked (keyword or config flag); a tuple carries them after the logits.
    assert model(input_ids=tokens()).hidden_states is None and model(input_ids=tokens()).attentions is None
    model.config.output_hidden_states = True
    assert len(model(input_ids=tokens()).hidden_states) == 3
    assert len(model(input_ids=tokens(), output_hidden_states=False, return_dict=False)) == 1


@pytest.mark.parametrize("backbone", BACKBONES)
def test_without_padding_features_equal_the_plain_backbones(backbone):
    model = make(backbone, head_type="gaam_layers")
    inputs = {"input_ids": tokens()}
    if backbone == "bert":
        inputs["token_type_ids"] = torch.tensor([[0] * 4 + [1] * 5] * 2)  # a sentence pair: segment ids matter
    plain = plain_backbone(model)(**inputs, output_hidden_states=True)
    features = model.backbone_features(**inputs)["backbone_layer_states"]
    expected = torch.stack([states.mean(1) for states in plain.hidden_states], 1)
    torch.testing.assert_close(features, expected, rtol=0, atol=0)
    if backbone == "bert":
        without_segments = model.backbone_features(input_ids=inputs["input_ids"])["backbone_layer_states"]
        assert not torch.allclose(without_segments, features)


@pytest.mark.parametrize("backbone", ["bert", "gpt2", "llama"])
def test_user_position_ids_reach_the_backbone(backbone):
    model = make(backbone, head_type="mean")
    position_ids = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10, 11]] * 2)
    plain = plain_backbone(model)(input_ids=tokens(), position_ids=position_ids).last_hidden_state.mean(1)
    features = model.backbone_features(input_ids=tokens(), position_ids=position_ids)["backbone_pooled_states"]
    torch.testing.assert_close(features, plain, rtol=0, atol=0)


def padded_batch(alone, side, length=9):
    pad = torch.zeros(1, length - alone.shape[1], dtype=torch.long)
    row = torch.cat([pad, alone], 1) if side == "left" else torch.cat([alone, pad], 1)
    mask = (torch.arange(length) >= pad.shape[1]) if side == "left" else (torch.arange(length) < alone.shape[1])
    batch = torch.cat([row, tokens(seed=2, size=1, length=length)])
    return batch, torch.stack([mask.long(), torch.ones(length, dtype=torch.long)])


CASES = [(b, "right") for b in BACKBONES] + [(b, "left") for b in DECODERS]


@pytest.mark.parametrize("backbone, side", CASES, ids=[f"{b}-{s}" for b, s in CASES])
@pytest.mark.parametrize("head", SEQUENCE_HEADS, ids=name_of)
def test_a_rows_prediction_equals_the_row_alone(backbone, side, head):
    model = make(backbone, **head)
    alone = tokens(size=1, length=6)
    batch, mask = padded_batch(alone, side)
    together = model(input_ids=batch, attention_mask=mask).logits[0]
    torch.testing.assert_close(together, model(input_ids=alone).logits[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("head_type", ["mean", "last_token"])
def test_a_decoder_whose_attention_does_not_say_it_is_causal_counts_positions_over_real_tokens(head_type):
    # XGLM's attention modules carry no `is_causal`; transformers knows the model type only as a causal LM.
    from transformers import XGLMConfig

    torch.manual_seed(0)
    backbone = XGLMConfig(d_model=32, num_layers=2, attention_heads=2, ffn_dim=64, vocab_size=100, pad_token_id=1)
    model = HeadedModelForSequenceClassification(
        HeadedConfig(backbone_config=backbone, head_type=head_type, num_labels=3, head_dropout=0.0)
    ).eval()
    alone = tokens(size=1, length=6)
    batch, mask = padded_batch(alone, "left")
    together = model(input_ids=batch, attention_mask=mask).logits[0]
    torch.testing.assert_close(together, model(input_ids=alone).logits[0], rtol=1e-4, atol=1e-5)
    assert not make("roberta", head_type=head_type)._derives_positions  # encoders keep their own numbering


@pytest.mark.parametrize("backbone, side", CASES, ids=[f"{b}-{s}" for b, s in CASES])
def test_a_rows_token_labels_equal_the_row_alone(backbone, side):
    model = make(backbone, HeadedModelForTokenClassification, head_type="attention")
    alone = tokens(size=1, length=6)
    batch, mask = padded_batch(alone, side)
    logits = model(input_ids=batch, attention_mask=mask).logits[0][mask[0].bool()]
    torch.testing.assert_close(logits, model(input_ids=alone).logits[0], rtol=1e-4, atol=1e-5)


GRADIENT_CASES = [
    (SEQUENCE_HEADS, HeadedModelForSequenceClassification), (TOKEN_HEADS, HeadedModelForTokenClassification)
]


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize(
    "head, model_class",
    [(head, model_class) for heads, model_class in GRADIENT_CASES for head in heads],
    ids=[f"{model_class.__name__[20:]}-{name_of(head)}" for heads, model_class in GRADIENT_CASES for head in heads],
)
def test_one_backward_gives_every_trainable_parameter_a_gradient(backbone, head, model_class):
    """What distributed data parallel needs without `find_unused_parameters`."""
    model = make(backbone, model_class, **head).train()
    batch, mask = padded_batch(tokens(size=1, length=6), "right")
    labels = torch.tensor([0, 2]) if model_class is HeadedModelForSequenceClassification else torch.ones_like(batch)
    model(input_ids=batch, attention_mask=mask, labels=labels).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    if backbone.startswith("gaam_gpt2"):
        gaam = [p.grad for name, p in model.named_parameters() if ".gaam." in name and name.startswith("backbone")]
        assert gaam and all(grad.abs().sum() > 0 for grad in gaam)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("head", SEQUENCE_HEADS, ids=name_of)
def test_round_trip_with_cached_features(tmp_path, backbone, head):
    model = make(backbone, freeze_backbone=True, **head)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is HeadedModelForSequenceClassification
    torch.testing.assert_close(reloaded(input_ids=tokens()).logits, model(input_ids=tokens()).logits, rtol=0, atol=0)
    from datasets import Dataset

    dataset = Dataset.from_dict({"input_ids": tokens(length=7).tolist(), "label": [0, 1]})
    cached = CachedFeaturesCollator()([row for row in cache_backbone_features(reloaded, dataset)])
    features = {name: value for name, value in cached.items() if name != "labels"}
    expected = model(input_ids=tokens(length=7)).logits
    torch.testing.assert_close(reloaded(**features).logits, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("head_type", ["gaam_layers", "daam"])
def test_importance_factor_on_cached_features(backbone, head_type):
    """Per layer, in [0, 1], from the head's GAAM (not the backbone's, which cached features never run)."""
    model = make(backbone, freeze_backbone=True, head_type=head_type, daam_conv_channels=8)
    with torch.no_grad():  # as after training: offsets away from 0 make layers differ
        offsets = model.head.gaam.mean_offsets if head_type == "gaam_layers" else model.head.gate.mean_offset
        offsets.normal_()
    from datasets import Dataset

    dataset = Dataset.from_dict({"input_ids": tokens(size=6, length=7).tolist(), "label": [0, 1, 2] * 2})
    cached = cache_backbone_features(model, dataset)
    batches = [CachedFeaturesCollator()([row for row in cached.select(range(i, i + 3))]) for i in (0, 3)]
    factors = hf_heads.importance_factors(model, batches)
    assert factors.names == ["head.gaam" if head_type == "gaam_layers" else "head.gate"]
    layers = 2 if head_type == "daam" else 3
    assert factors.factors[0].shape == (layers,)
    assert factors.factors[0].min() == 0 and factors.factors[0].max() == 1


@pytest.mark.parametrize("backbone", BACKBONES)
def test_token_classification_round_trip(tmp_path, backbone):
    model = make(backbone, HeadedModelForTokenClassification, head_type="linear")
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForTokenClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(input_ids=tokens()).logits, model(input_ids=tokens()).logits, rtol=0, atol=0)


def test_gaam_gpt2_backbone_folder_loads_without_hf_heads(tmp_path, run_without_hf_heads):
    """The composed folder carries GAAM-GPT2's code beside the head's."""
    model = make("gaam_gpt2", head_type="gaam_layers")
    model.save_pretrained(tmp_path / "model")
    assert {"configuration_gaam_gpt2.py", "modeling_gaam_gpt2.py"} <= {p.name for p in (tmp_path / "model").iterdir()}
    torch.save(tokens(), tmp_path / "ids.pt")
    run_without_hf_heads(
        f"""
        import torch
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
        assert type(model.backbone).__name__ == "GaamGPT2Model"
        logits = model.eval()(input_ids=torch.load({str(tmp_path / "ids.pt")!r})).logits
        torch.save(logits, {str(tmp_path / "out.pt")!r})
        """
    )
    # A saved folder carries no fused GAAM kernel, so it runs the exact PyTorch path: equal up to float32 rounding.
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), model(input_ids=tokens()).logits, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_every_head_on_every_backbone_loads_without_hf_heads(tmp_path, run_without_hf_heads, monkeypatch):
    # A saved folder carries no fused GAAM kernel: the expected outputs come from the exact path it runs.
    monkeypatch.setattr(gaam_layer, "_kernel", False)
    expected = {}
    for backbone, head in itertools.product(BACKBONES, SEQUENCE_HEADS):
        name = f"{backbone}-{name_of(head)}"
        model = make(backbone, **head)
        model.save_pretrained(tmp_path / name)
        expected[name] = model(input_ids=tokens()).logits
    torch.save(tokens(), tmp_path / "ids.pt")
    run_without_hf_heads(
        f"""
        import torch
        from transformers import AutoModelForSequenceClassification
        folder, outputs = {str(tmp_path)!r}, {{}}
        for name in {sorted(expected)!r}:
            model = AutoModelForSequenceClassification.from_pretrained(folder + "/" + name, trust_remote_code=True)
            outputs[name] = model.eval()(input_ids=torch.load(folder + "/ids.pt")).logits
        torch.save(outputs, folder + "/outputs.pt")
        """
    )
    outputs = torch.load(tmp_path / "outputs.pt")
    for name, logits in expected.items():
        torch.testing.assert_close(outputs[name], logits, rtol=0, atol=0, msg=name)
