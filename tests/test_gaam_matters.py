"""GAAM that matters: GAAM-GPT2's GAAM settings, the `gaam_contribution` diagnostic, and "inert" as a failing test."""

import json

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoModelForSequenceClassification, GPT2Config, GPT2LMHeadModel

from hf_heads import (
    GaamGPT2Config,
    GaamGPT2ForSequenceClassification,
    GaamGPT2LMHeadModel,
    HeadedConfig,
    HeadedModelForSequenceClassification,
    gaam_contribution,
)
from hf_heads.tokenization.tokenization_char import TEXT8_ALPHABET
from hf_heads.training.data import load_bbc_news, split_stratified
from hf_heads.training.lm_data import normalize_to_alphabet


TINY = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=120, n_positions=64, bos_token_id=0, eos_token_id=0)


def tiny_config(**overrides) -> GaamGPT2Config:
    return GaamGPT2Config(**{**TINY, "pad_token_id": 0, "num_labels": 3, **overrides})


def padded_batch(seed=0):
    """Three rows of lengths 10, 7 and 4, right-padded with token 0, with labels."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, TINY["vocab_size"], (3, 10), generator=generator)
    mask = (torch.arange(10) < torch.tensor([[10], [7], [4]])).long()
    return dict(input_ids=ids * mask, attention_mask=mask, labels=torch.tensor([0, 1, 2]))


# ------------------------------------------------------------------------------------------------ configuration


def test_defaults_give_gaam_real_scale():
    config = tiny_config()
    assert config.gaam_normalization == "mean" and config.gaam_gate_init == 1.0
    model = GaamGPT2LMHeadModel(config)
    for block in model.transformer.h:
        assert block.gaam.normalization == "mean" and block.gaam_gate.weight.item() == 1.0
    replace = GaamGPT2ForSequenceClassification(tiny_config(gaam_placement="replace", classifier_pooling="mean"))
    assert all(block.gaam.normalization == "mean" for block in replace.transformer.h)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(gaam_normalization="softmax"), r"`gaam_normalization`='softmax'.*'mean', 'none', 'sum'"),
        (dict(gaam_gate_init=float("nan")), r"`gaam_gate_init`.*finite.*nan"),
        (dict(gaam_gate_init=float("inf")), r"`gaam_gate_init`.*finite.*inf"),
        (dict(gaam_gate_init="open"), "gaam_gate_init"),
    ],
)
def test_bad_gaam_settings_fail_at_construction(overrides, message):
    with pytest.raises((ValueError, StrictDataclassError), match=message):
        tiny_config(**overrides)


@pytest.fixture
def gpt2_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**TINY)).eval()
    model.save_pretrained(tmp_path / "gpt2")
    return model, tmp_path / "gpt2"


def test_gpt2_checkpoint_gets_the_defaults_and_starts_near_gpt2(gpt2_checkpoint):
    gpt2, path = gpt2_checkpoint
    gaam = GaamGPT2LMHeadModel.from_pretrained(path).eval()
    assert gaam.config.gaam_normalization == "mean"
    assert all(block.gaam_gate.weight.item() == 1.0 for block in gaam.transformer.h)
    ids = torch.randint(1, TINY["vocab_size"], (4, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.log_softmax(gpt2(ids).logits, -1)
        ours = torch.log_softmax(gaam(ids).logits, -1)
    # The open gate changes the model (GAAM is a real sub-layer) but keeps it close to the GPT-2 it loaded.
    kl = (expected.exp() * (expected - ours)).sum(-1).mean().item()
    assert 0 < kl < 0.05
    closed = GaamGPT2LMHeadModel.from_pretrained(path, gaam_gate_init=0.0).eval()
    torch.testing.assert_close(closed(ids).logits, gpt2(ids).logits, rtol=0, atol=0)


def test_folder_saved_before_the_normalization_field_keeps_its_behaviour(tmp_path):
    torch.manual_seed(0)
    # What GAAM-GPT2 used to be: the reference's "sum" weights and a gate that training moved a little from 0.
    old = GaamGPT2ForSequenceClassification(
        tiny_config(gaam_normalization="sum", gaam_gate_init=0.0, classifier_pooling="mean")
    ).eval()
    with torch.no_grad():
        for block in old.transformer.h:
            block.gaam_gate.weight.fill_(0.02)
    old.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["gaam_normalization"] == "sum"  # new folders always record the field
    for field in ("gaam_normalization", "gaam_gate_init"):
        del saved[field]
    (tmp_path / "config.json").write_text(json.dumps(saved))

    batch = padded_batch()
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask")}
    for model_class in (GaamGPT2ForSequenceClassification, AutoModelForSequenceClassification):
        reloaded = model_class.from_pretrained(tmp_path).eval()
        assert reloaded.config.gaam_normalization == "sum"
        torch.testing.assert_close(reloaded(**inputs).logits, old(**inputs).logits, rtol=0, atol=0)
    # Asked for explicitly, the new normalisation still applies to such a folder.
    chosen = GaamGPT2ForSequenceClassification.from_pretrained(tmp_path, gaam_normalization="mean")
    assert chosen.transformer.h[0].gaam.normalization == "mean"


# ------------------------------------------------------------------------------------------- gaam_contribution


def _real_token_ratio(branches, streams, mask) -> float:
    real = mask.to(torch.bool)
    branch = sum(b[real].square().sum() for b in branches)
    stream = sum(s[real].square().sum() for s in streams)
    return (branch / stream).sqrt().item()


@pytest.mark.parametrize("axis", ["features", "sequence"])
def test_contribution_of_augment_blocks_matches_a_direct_computation(axis):
    torch.manual_seed(0)
    model = GaamGPT2ForSequenceClassification(
        tiny_config(gaam_norm_axis=axis, gaam_gate_init=0.7, classifier_pooling="mean")
    ).eval()
    batch = padded_batch()
    # The stream GAAM is added to in "augment": the block's input plus its self-attention output.
    attention_outputs = []
    hooks = [
        block.attn.register_forward_hook(lambda module, args, output: attention_outputs.append(output[0]))
        for block in model.transformer.h
    ]
    with torch.no_grad():
        outputs = model(**batch, output_hidden_states=True)
    for hook in hooks:
        hook.remove()
    mask = batch["attention_mask"]
    expected = []
    for index, block in enumerate(model.transformer.h):
        stream = outputs.hidden_states[index] + attention_outputs[index]
        gaam_mask = mask if axis == "sequence" else None
        with torch.no_grad():
            branch = 0.7 * block.gaam(stream, attention_mask=gaam_mask)
        expected.append(_real_token_ratio([branch], [stream], mask))

    measured = gaam_contribution(model, [batch])
    assert measured.names == ["transformer.h.0.gaam", "transformer.h.1.gaam"]
    assert measured.branch_ratios == pytest.approx(expected, rel=1e-5)
    assert measured.eval_loss == pytest.approx(outputs.loss.item(), rel=1e-6)
    # Removing GAAM is closing every gate, done here independently of the diagnostic.
    with torch.no_grad():
        for block in model.transformer.h:
            block.gaam_gate.weight.zero_()
        closed = model(**batch).loss.item()
    assert measured.eval_loss_without_gaam == pytest.approx(closed, rel=1e-6)
    assert measured.loss_change == pytest.approx(closed - outputs.loss.item(), abs=1e-6)


def test_contribution_of_replace_blocks_matches_a_direct_computation():
    torch.manual_seed(0)
    model = GaamGPT2ForSequenceClassification(
        tiny_config(gaam_placement="replace", gaam_norm_axis="sequence", classifier_pooling="mean")
    ).eval()
    batch = padded_batch()
    with torch.no_grad():
        hidden_states = model(**batch, output_hidden_states=True).hidden_states
        expected = []
        for index, block in enumerate(model.transformer.h):
            # "replace" adds GAAM(ln_1(h)) to the block's input h.
            stream = hidden_states[index]
            branch = block.gaam(block.ln_1(stream), attention_mask=batch["attention_mask"])
            expected.append(_real_token_ratio([branch], [stream], batch["attention_mask"]))
    measured = gaam_contribution(model, [batch])
    assert measured.branch_ratios == pytest.approx(expected, rel=1e-5)
    assert measured.eval_loss_without_gaam != measured.eval_loss


def test_contribution_averages_over_batches_and_ignores_padding():
    torch.manual_seed(0)
    model = GaamGPT2ForSequenceClassification(tiny_config(gaam_norm_axis="sequence", classifier_pooling="mean"))
    batch = padded_batch()
    rows = []
    for row in range(3):
        length = int(batch["attention_mask"][row].sum())
        rows.append({key: value[row : row + 1, :length] for key, value in batch.items() if key != "labels"})
        rows[-1]["labels"] = batch["labels"][row : row + 1]
    together = gaam_contribution(model, [batch])
    apart = gaam_contribution(model, rows)
    assert together.branch_ratios == pytest.approx(apart.branch_ratios, rel=1e-4)
    assert together.eval_loss == pytest.approx(apart.eval_loss, rel=1e-4)
    assert together.num_examples == apart.num_examples == 3
    assert model.training  # the model's mode is restored


def test_contribution_of_the_headed_gaam_layers_head():
    torch.manual_seed(0)
    backbone = GPT2Config(**TINY, pad_token_id=0)
    model = HeadedModelForSequenceClassification(
        HeadedConfig(backbone_config=backbone.to_dict(), head_type="gaam_layers", num_labels=3)
    ).eval()
    batch = padded_batch()
    head_inputs = []
    hook = model.head.gaam.register_forward_hook(lambda module, args, output: head_inputs.append((args[0], output)))
    with torch.no_grad():
        model(**batch)
    hook.remove()
    states, branch = head_inputs[0]
    measured = gaam_contribution(model, [batch])
    assert measured.names == ["head.gaam"]
    assert measured.branch_ratios == pytest.approx([(branch.norm() / states.norm()).item()], rel=1e-5)


def test_contribution_report_reads_well():
    torch.manual_seed(0)
    model = GaamGPT2ForSequenceClassification(tiny_config(classifier_pooling="mean"))
    measured = gaam_contribution(model, [padded_batch()])
    table = measured.to_markdown()
    assert table.startswith("| GAAM layer |") and "`transformer.h.1.gaam`" in table and "GAAM removed" in table
    assert f"{measured.branch_ratios[0]:.1%}" in str(measured)


def test_contribution_refuses_what_it_cannot_measure():
    model = GaamGPT2ForSequenceClassification(tiny_config(gaam_layers=[], classifier_pooling="mean"))
    with pytest.raises(ValueError, match="no GAAM layer"):
        gaam_contribution(model, [padded_batch()])
    model = GaamGPT2ForSequenceClassification(tiny_config(classifier_pooling="mean"))
    unlabelled = {key: value for key, value in padded_batch().items() if key != "labels"}
    with pytest.raises(ValueError, match="labels"):
        gaam_contribution(model, [unlabelled])
    with pytest.raises(ValueError, match="empty"):
        gaam_contribution(model, [])


# ------------------------------------------------------------------------------------- "inert" as a failing test

BLOCK, STEPS, SEEDS = 128, 150, (0, 1, 2)
LM_SIZE = dict(n_layer=2, n_embd=64, n_head=4, n_positions=BLOCK, vocab_size=len(TEXT8_ALPHABET))


@pytest.fixture(scope="module")
def bbc_characters():
    """BBC News as text8-style characters: training text, and 64 held-out blocks from other articles."""
    splits = split_stratified(load_bbc_news(seed=0)["train"], test_size=0.15, seed=0)
    index = {character: i for i, character in enumerate(TEXT8_ALPHABET)}

    def encode(texts):
        text = " ".join(normalize_to_alphabet(text.lower(), TEXT8_ALPHABET) for text in texts)
        return torch.tensor([index[character] for character in text])

    held_out = encode(splits["test"]["text"])[: 64 * BLOCK].view(64, BLOCK)
    return encode(splits["train"]["text"]), [dict(input_ids=rows, labels=rows) for rows in held_out.split(32)]


def train_character_lm(text: torch.Tensor, seed: int, **gaam_fields) -> GaamGPT2LMHeadModel:
    """The demo's optimiser settings on a smaller model: AdamW at 2e-3 with warmup, clipping at 1."""
    torch.manual_seed(seed)
    model = GaamGPT2LMHeadModel(GaamGPT2Config(**LM_SIZE, bos_token_id=None, eos_token_id=None, **gaam_fields))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 20))
    generator = torch.Generator().manual_seed(seed)
    for _ in range(STEPS):
        starts = torch.randint(len(text) - BLOCK, (16,), generator=generator)
        ids = torch.stack([text[start : start + BLOCK] for start in starts])
        model(input_ids=ids, labels=ids).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        warmup.step()
        optimizer.zero_grad()
    return model.eval()


def test_trained_gaam_is_a_material_part_of_the_model(bbc_characters):
    """One seed of the test below (which is slow): every GAAM branch carries >= 5% of the residual stream, and
    removing GAAM costs more evaluation loss than the spread between seeds that the slow test measures (0.007 nats
    per character over seeds 0-2, measured with these settings)."""
    text, held_out = bbc_characters
    result = gaam_contribution(train_character_lm(text, 0), held_out)
    print(result)
    assert min(result.branch_ratios) >= 0.05, result
    assert result.loss_change > 0.007, result


@pytest.mark.slow
def test_removing_trained_gaam_costs_more_than_the_seed_to_seed_spread(bbc_characters):
    text, held_out = bbc_characters
    measured = [gaam_contribution(train_character_lm(text, seed), held_out) for seed in SEEDS]
    for result in measured:
        print(result)
        assert min(result.branch_ratios) >= 0.05, result
    spread = max(result.eval_loss for result in measured) - min(result.eval_loss for result in measured)
    assert min(result.loss_change for result in measured) > spread, (spread, [str(result) for result in measured])


@pytest.mark.slow
def test_reference_normalization_with_a_closed_gate_is_inert(bbc_characters):
    """The settings GAAM-GPT2 had before (reference "sum", gate starting at 0) fail the tests above."""
    text, held_out = bbc_characters
    result = gaam_contribution(train_character_lm(text, 0, gaam_normalization="sum", gaam_gate_init=0.0), held_out)
    print(result)
    assert max(result.branch_ratios) < 0.05
    assert abs(result.loss_change) < 0.007
