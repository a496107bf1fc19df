"""LoRA with `peft` on `headed` and `gaam_gpt2` models: the adapter and the new head train, save and reload."""

import pytest
import torch
from peft import PeftModel, get_peft_model
from transformers import BertConfig, GPT2Config

from hf_heads import (
    GaamGPT2Config,
    GaamGPT2ForSequenceClassification,
    HeadedConfig,
    HeadedModelForSequenceClassification,
    lora_config_for,
)


def headed(backbone):
    config = {
        "gpt2": GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64),
        "bert": BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                           vocab_size=100, max_position_embeddings=64),
    }[backbone]
    return HeadedModelForSequenceClassification(
        HeadedConfig(backbone_config=config.to_dict(), head_type="gaam_layers", num_labels=3)
    )


def gaam_gpt2(_):
    return GaamGPT2ForSequenceClassification(
        GaamGPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64, num_labels=3,
                       classifier_pooling="mean")
    )


BUILDERS = {"headed-gpt2": (headed, "gpt2"), "headed-bert": (headed, "bert"), "gaam_gpt2": (gaam_gpt2, None)}


def batch():
    generator = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(1, 100, (4, 7), generator=generator),
        "attention_mask": torch.tensor([[1] * 7, [1] * 7, [0, 0, 1, 1, 1, 1, 1], [1] * 5 + [0, 0]]),
        "labels": torch.tensor([0, 1, 2, 1]),
    }


@pytest.mark.parametrize("kind", BUILDERS)
def test_lora_trains_saves_and_reloads(tmp_path, kind):
    build, backbone = BUILDERS[kind]
    torch.manual_seed(0)
    base = build(backbone)
    base.save_pretrained(tmp_path / "base")
    frozen_before = {name: p.detach().clone() for name, p in base.named_parameters()}
    model = get_peft_model(base, lora_config_for(base, r=4))

    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    model.print_trainable_parameters()
    assert any("lora_A" in name for name in trainable)
    assert any(".modules_to_save." in name and ("classifier" in name or "score" in name) for name in trainable)
    assert any(".modules_to_save." in name and "gaam" in name for name in trainable), "GAAM must train under LoRA"

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        model(**batch()).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        logits = model(**batch()).logits
    model.save_pretrained(tmp_path / "adapter")

    reloaded_base = type(base).from_pretrained(tmp_path / "base")
    for name, parameter in reloaded_base.named_parameters():
        torch.testing.assert_close(parameter, frozen_before[name], rtol=0, atol=0)
    reloaded = PeftModel.from_pretrained(reloaded_base, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch()).logits, logits, rtol=0, atol=0)
    with torch.no_grad():
        untrained = type(base).from_pretrained(tmp_path / "base").eval()(**batch()).logits
    assert not torch.allclose(untrained, logits), "the adapter and the head must change the predictions"


def test_lora_config_names_an_unsupported_model():
    with pytest.raises(TypeError, match="`headed` or `gaam_gpt2`"):
        lora_config_for(torch.nn.Linear(2, 2))
