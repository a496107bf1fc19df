"""`recipes/pretrain_lm.py` end to end on tiny settings: char and BPE models, YAML, early stopping, bad input."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from safetensors.torch import load_file


ROOT = Path(__file__).resolve().parents[1]
from hf_heads.training import language_modeling as pretrain_lm  # noqa: E402


TINY_MODEL = "n_layer=2,n_embd=32,n_head=4,gaam_num_heads=2"
COMMON = ["--report_to", "none", "--use_cpu", "true", "--logging_steps", "1", "--per_device_train_batch_size", "8",
          "--sample_max_new_tokens", "4"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """A local text file in the text8 spirit: one line, lower case, no punctuation (text8 itself is not installable)."""
    path = tmp_path_factory.mktemp("data") / "text.txt"
    words = "anarchism originated as a term of abuse first used against early working class radicals ".split()
    path.write_text(" ".join(words[i % len(words)] for i in range(3000)))
    return path


@pytest.fixture(scope="module")
def char_run(tmp_path_factory, text_file):
    output_dir = tmp_path_factory.mktemp("char") / "model"
    metrics = pretrain_lm.main([
        "--model_type", "gaam_gpt2", "--tokenizer", "char", "--config_overrides", TINY_MODEL, "--train_file",
        str(text_file), "--block_size", "32", "--max_steps", "6", "--learning_rate", "3e-3", "--output_dir",
        str(output_dir), *COMMON,
    ])
    return output_dir, metrics


def test_char_model_reports_bits_per_character(char_run):
    _, metrics = char_run
    assert metrics["eval_bits_per_character"] == pytest.approx(metrics["eval_loss"] / math.log(2))
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    # Six steps on a repetitive text already beat a uniform guess over the 30 characters.
    assert metrics["eval_loss"] < math.log(30)


def test_char_output_folder_is_ready_for_the_hub(char_run):
    output_dir, metrics = char_run
    for name in ("model.safetensors", "config.json", "modeling_gaam_gpt2.py", "tokenization_char.py", "vocab.json",
                 "all_results.json", "loss_curves.png", "gaam_importance.png", "README.md"):
        assert (output_dir / name).is_file(), name
    card = ModelCard.load(output_dir / "README.md")
    assert card.data.pipeline_tag == "text-generation"
    assert {r.metric_type for r in card.data.eval_results} == {"loss", "perplexity", "bits_per_character"}


def test_char_model_and_tokenizer_load_without_hf_heads(char_run, run_without_hf_heads, tmp_path):
    output_dir, _ = char_run
    import hf_heads  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    ids = tokenizer("the term of", return_tensors="pt")["input_ids"]
    expected = AutoModelForCausalLM.from_pretrained(output_dir).eval()(ids).logits
    output = run_without_hf_heads(
        f"""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained({str(output_dir)!r}, trust_remote_code=True)
        model = AutoModelForCausalLM.from_pretrained({str(output_dir)!r}, trust_remote_code=True).eval()
        ids = tokenizer("the term of", return_tensors="pt")["input_ids"]
        torch.save(model(ids).logits, {str(tmp_path / "logits.pt")!r})
        print(type(tokenizer).__name__)
        """
    )
    assert output.strip() == "CharTokenizer"
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected)
    assert tokenizer.model_max_length == 32  # the run's --block_size, so `pipeline` truncates to what the model saw


def test_continued_pretraining_keeps_the_tokenizer_and_starts_from_the_weights(char_run, text_file, tmp_path):
    first, _ = char_run
    pretrain_lm.main([
        "--model_name_or_path", str(first), "--train_file", str(text_file), "--block_size", "32", "--max_steps", "1",
        "--learning_rate", "1e-12", "--output_dir", str(tmp_path / "continued"), *COMMON,
    ])
    assert json.loads((tmp_path / "continued" / "vocab.json").read_text()) == json.loads(
        (first / "vocab.json").read_text()
    )
    before, after = load_file(first / "model.safetensors"), load_file(tmp_path / "continued" / "model.safetensors")
    assert before.keys() == after.keys()
    assert max((before[k] - after[k]).abs().max().item() for k in before) < 1e-6


def test_bpe_model_from_yaml_on_bbc_news(tmp_path):
    arguments = {
        "model_type": "gpt2", "tokenizer": "bpe", "tokenizer_vocab_size": 300,
        "config_overrides": "n_layer=1,n_embd=32,n_head=4", "dataset_name": "bbc_news", "block_size": 64,
        "max_steps": 2, "output_dir": str(tmp_path / "bpe"), "report_to": "none", "use_cpu": True,
        "per_device_train_batch_size": 4, "sample_max_new_tokens": 3,
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(arguments))
    metrics = pretrain_lm.main([str(tmp_path / "run.yaml")])
    assert "eval_bits_per_character" not in metrics  # a BPE token is not a character
    assert (tmp_path / "bpe" / "tokenizer.json").is_file()
    assert json.loads((tmp_path / "bpe" / "config.json").read_text())["model_type"] == "gpt2"


def test_early_stopping_ends_training_when_validation_loss_stalls(text_file, tmp_path):
    # With a learning rate of 0 the validation loss never improves: patience 1 stops at the second evaluation.
    metrics = pretrain_lm.main([
        "--model_type", "gpt2", "--tokenizer", "char", "--config_overrides", "n_layer=1,n_embd=32,n_head=4",
        "--train_file", str(text_file), "--block_size", "32", "--max_steps", "40", "--learning_rate", "0",
        "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
        "--load_best_model_at_end", "true", "--early_stopping_patience", "1", "--output_dir", str(tmp_path / "es"),
        *COMMON,
    ])
    state = json.loads(max((tmp_path / "es").glob("checkpoint-*/trainer_state.json"), key=lambda p: p.stat().st_mtime).read_text())
    assert state["global_step"] == 4
    assert metrics["train_epoch"] < 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model_type", "bert"], "`--model_type`='bert'"),
        (["--model_type", "gpt2", "--tokenizer", "words"], "`--tokenizer`='words'"),
        (["--model_type", "gpt2", "--early_stopping_patience", "2"], "`--early_stopping_patience`=2 needs"),
        (["--model_type", "gpt2", "--block_size", "1"], "`--block_size` must be at least 2"),
        (["--model_type", "gpt2", "--weight_init", "zeros"], "`--weight_init`='zeros'"),
        (["--model_type", "gpt2", "--config_overrides", "n_positions=16", "--block_size", "32"],
         r"`--block_size`=32 (given, or the recipe's default\) exceeds the model's 16 positions"),
    ],
)
def test_bad_input_fails_before_training(flags, message, text_file, tmp_path):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        pretrain_lm.main([*flags, "--train_file", str(text_file), "--output_dir", str(tmp_path / "out"), *COMMON])
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_text_shorter_than_a_block_is_refused(tmp_path):
    (tmp_path / "short.txt").write_text("too short")
    with pytest.raises(ValueError, match="block"):
        pretrain_lm.main([
            "--model_type", "gpt2", "--tokenizer", "char", "--config_overrides", "n_layer=1,n_embd=32,n_head=4",
            "--train_file", str(tmp_path / "short.txt"), "--block_size", "64", "--output_dir", str(tmp_path / "o"),
            *COMMON,
        ])


def test_a_gpt2_checkpoint_continues_as_gaam_gpt2(text_file, tmp_path):
    """`--model_type gaam_gpt2` with a GPT-2 `--model_name_or_path`: every GPT-2 weight kept, GAAM added."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_heads import CharTokenizer

    tokenizer = CharTokenizer()
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=len(tokenizer), n_positions=64)).save_pretrained(
        tmp_path / "gpt2"
    )
    tokenizer.save_pretrained(tmp_path / "gpt2")
    pretrain_lm.main([
        "--model_name_or_path", str(tmp_path / "gpt2"), "--model_type", "gaam_gpt2", "--train_file", str(text_file),
        "--block_size", "32", "--max_steps", "1", "--learning_rate", "1e-12", "--output_dir", str(tmp_path / "gaam"),
        *COMMON,
    ])
    assert json.loads((tmp_path / "gaam" / "config.json").read_text())["model_type"] == "gaam_gpt2"
    before, after = load_file(tmp_path / "gpt2" / "model.safetensors"), load_file(tmp_path / "gaam" / "model.safetensors")
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    assert {k for k in after if k not in before} and all(".gaam" in k for k in after if k not in before)


def test_left_out_lines_are_counted_and_an_empty_prompt_generates(tmp_path, capsys):
    """Empty and whitespace-only lines are left out of the text (said in the log and the card), lines with no
    character of the alphabet too; an empty sample prompt starts from the end-of-text token."""
    words = "anarchism originated as a term of abuse first used against early working class radicals".split()
    lines = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 4
    lines[3:3] = ["", "   ", "1914 - 1918", ""]  # three empty once read; one empty once cleaned to a-z and space
    (tmp_path / "text.txt").write_text("\n".join(lines) + "\n")
    pretrain_lm.main([
        "--model_type", "gpt2", "--tokenizer", "char", "--config_overrides", "n_layer=1,n_embd=16,n_head=2",
        "--train_file", str(tmp_path / "text.txt"), "--block_size", "32", "--max_steps", "1", "--output_dir",
        str(tmp_path / "out"), "--sample_prompts", "|an", *COMMON,
    ])
    out = capsys.readouterr().out
    total = len(lines)
    first = (f"The train file '{tmp_path / 'text.txt'}': 3 of {total} lines are empty or whitespace only and are left "
             f"out; the language model trains on the other {total - 3}.")
    second = (f"The train file '{tmp_path / 'text.txt'}': 1 of {total - 3} lines hold no character of --char_alphabet "
              f"and are left out; the language model trains on the other {total - 4}.")
    assert first in out and second in out
    card = (tmp_path / "out" / "README.md").read_text()
    assert "3 of" in card and "are empty or whitespace only and are left out" in card
    samples = [line for line in out.splitlines() if "|" in line and not line.startswith(("rank", "{"))]
    assert any(line.startswith("<eos>|") for line in samples), out[-2000:]
    assert any(line.startswith("an|") for line in samples), out[-2000:]
