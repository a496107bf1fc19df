"""Save/load guarantees for every registered class: identical logits in-process and through `trust_remote_code` in a
process without `hf_heads`, safe folders (safetensors, only this package's code), broken weights named, and a
prediction that does not depend on batch-mates, padding side or a save/load."""

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    GPT2Config,
)

import hf_heads
from hf_heads.tokenization import train_bpe_tokenizer


TINY = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=80, n_positions=32, pad_token_id=0, bos_token_id=1,
            eos_token_id=1, gaam_num_heads=2)
BERT = BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64, vocab_size=80,
                  max_position_embeddings=32)


def output_of(model_output):
    return model_output.logits if hasattr(model_output, "logits") else (
        model_output.start_logits if hasattr(model_output, "start_logits") else model_output.last_hidden_state
    )


# (name, class, Auto class, config) for every class `import hf_heads` registers.
CLASSES = [
    ("GaamGPT2Model", hf_heads.GaamGPT2Model, AutoModel, lambda: hf_heads.GaamGPT2Config(**TINY)),
    ("GaamGPT2LMHeadModel", hf_heads.GaamGPT2LMHeadModel, AutoModelForCausalLM, lambda: hf_heads.GaamGPT2Config(**TINY)),
    ("GaamGPT2ForSequenceClassification", hf_heads.GaamGPT2ForSequenceClassification, AutoModelForSequenceClassification,
     lambda: hf_heads.GaamGPT2Config(**TINY, num_labels=3, classifier_pooling="mean")),
    ("GaamGPT2ForTokenClassification", hf_heads.GaamGPT2ForTokenClassification, AutoModelForTokenClassification,
     lambda: hf_heads.GaamGPT2Config(**TINY, num_labels=4)),
    ("GaamGPT2ForQuestionAnswering", hf_heads.GaamGPT2ForQuestionAnswering, AutoModelForQuestionAnswering,
     lambda: hf_heads.GaamGPT2Config(**TINY)),
    ("HeadedModelForSequenceClassification", hf_heads.HeadedModelForSequenceClassification,
     AutoModelForSequenceClassification,
     lambda: hf_heads.HeadedConfig(backbone_config=BERT, head_type="gaam_layers", num_labels=3)),
    ("HeadedModelForTokenClassification", hf_heads.HeadedModelForTokenClassification, AutoModelForTokenClassification,
     lambda: hf_heads.HeadedConfig(backbone_config=BERT, head_type="attention", num_labels=4)),
]
INPUTS = dict(input_ids=torch.tensor([[5, 6, 7, 8, 9, 10], [0, 0, 11, 12, 13, 14]]),
              attention_mask=torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]]))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Every class, randomly initialised (GAAM gates opened so GAAM matters), saved; with its logits."""
    folder = tmp_path_factory.mktemp("saved")
    expected = {}
    for name, model_class, _, config in CLASSES:
        torch.manual_seed(0)
        model = model_class(config()).eval()
        with torch.no_grad():
            for parameter_name, parameter in model.named_parameters():
                if "gaam_gate" in parameter_name:
                    parameter.fill_(0.5)
        model.save_pretrained(folder / name)
        expected[name] = output_of(model(**INPUTS))
    return folder, expected


@pytest.mark.parametrize("name, model_class, auto_class, config", CLASSES, ids=[c[0] for c in CLASSES])
def test_auto_class_round_trip_gives_identical_outputs(saved, name, model_class, auto_class, config):
    folder, expected = saved
    loaded = auto_class.from_pretrained(folder / name).eval()
    assert type(loaded) is model_class
    torch.testing.assert_close(output_of(loaded(**INPUTS)), expected[name], rtol=0, atol=0)


def test_every_class_loads_with_remote_code_without_hf_heads(saved, run_without_hf_heads):
    folder, expected = saved
    torch.save(INPUTS, folder / "inputs.pt")
    run_without_hf_heads(
        f"""
        import torch, transformers
        folder = {str(folder)!r}
        inputs = torch.load(folder + "/inputs.pt")
        outputs = {{}}
        for name, auto in {[(name, auto.__name__) for name, _, auto, _ in CLASSES]!r}:
            model = getattr(transformers, auto).from_pretrained(folder + "/" + name, trust_remote_code=True).eval()
            result = model(**inputs)
            for field in ("logits", "start_logits", "last_hidden_state"):
                if getattr(result, field, None) is not None:
                    outputs[name] = getattr(result, field)
                    break
        torch.save(outputs, folder + "/remote_outputs.pt")
        """
    )
    remote = torch.load(folder / "remote_outputs.pt")
    assert set(remote) == set(expected)
    for name in expected:
        torch.testing.assert_close(remote[name], expected[name], rtol=0, atol=0, msg=name)


def test_saved_folders_hold_safetensors_and_only_this_packages_code(saved):
    folder, _ = saved
    allowed_code = {"configuration_gaam_gpt2.py", "modeling_gaam_gpt2.py", "configuration_headed.py",
                    "modeling_headed.py", "heads.py", "gaam_layer.py", "readable_weights.py", "losses.py"}
    for name, *_ in CLASSES:
        files = {path.name for path in (folder / name).iterdir()}
        assert "model.safetensors" in files
        assert not {f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))}, name
        code = {f for f in files if f.endswith(".py")}
        assert code and code <= allowed_code, code - allowed_code
        # Each code file is the package's own source, byte for byte.
        package = Path(hf_heads.__file__).parent
        for file_name in code:
            sources = list(package.rglob(file_name))
            assert any(source.read_bytes() == (folder / name / file_name).read_bytes() for source in sources), file_name
        config = json.loads((folder / name / "config.json").read_text())
        assert all(reference.split(".")[0] + ".py" in code for reference in config["auto_map"].values())


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.parametrize("name", ["GaamGPT2ForSequenceClassification", "HeadedModelForSequenceClassification"])
def test_broken_weights_file_is_named(saved, tmp_path, damage, name):
    folder, _ = saved
    import shutil

    shutil.copytree(folder / name, tmp_path / name)
    weights = tmp_path / name / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a safetensors file")
    with pytest.raises(OSError, match=r"The weights in '.*' are not a readable safetensors file .* truncated or corrupted"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path / name)


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["markets rallied as shares rose", "the team won the final match", "new phones and chips were shown"]
    return train_bpe_tokenizer(texts * 20, vocab_size=300, min_frequency=1)


@pytest.mark.parametrize(
    "make",
    [
        lambda vocab: hf_heads.GaamGPT2ForSequenceClassification(
            hf_heads.GaamGPT2Config(**{**TINY, "vocab_size": vocab}, num_labels=3, classifier_pooling="last")),
        lambda vocab: hf_heads.GaamGPT2ForSequenceClassification(hf_heads.GaamGPT2Config(
            **{**TINY, "vocab_size": vocab}, num_labels=3, classifier_pooling="mean", gaam_norm_axis="sequence")),
        # A decoder backbone: left padding is a decoder's norm (an encoder such as BERT numbers left-padded positions
        # as the plain BERT does, so there only right padding keeps a row as alone).
        lambda vocab: hf_heads.HeadedModelForSequenceClassification(hf_heads.HeadedConfig(
            backbone_config=GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=vocab, n_positions=32),
            head_type="attention", head_pooling="attention", num_labels=3)),
    ],
    ids=["gaam_gpt2 last", "gaam_gpt2 mean sequence-axis", "headed attention"],
)
def test_prediction_is_the_same_alone_in_a_batch_either_padding_side_and_after_save(make, tokenizer, tmp_path):
    torch.manual_seed(0)
    model = make(len(tokenizer)).eval()
    text = "shares rose as markets rallied"
    batch = [text, "won", "the team won the final match and the chips were shown"]
    alone = model(**tokenizer(text, return_tensors="pt")).logits[0]
    for side in ("right", "left"):
        tokenizer.padding_side = side
        together = model(**tokenizer(batch, padding=True, return_tensors="pt")).logits[0]
        torch.testing.assert_close(together, alone, rtol=0, atol=1e-5, msg=side)
    model.save_pretrained(tmp_path / "model")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    torch.testing.assert_close(reloaded(**tokenizer(text, return_tensors="pt")).logits[0], alone, rtol=0, atol=1e-6)
