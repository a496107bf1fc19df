"""`explain`: each generated token's probability and alternatives, checked against the model's own logits."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_heads import GaamGPT2Config, GaamGPT2LMHeadModel, explain
from hf_heads.tokenization.bpe import train_bpe_tokenizer


TEXTS = ["the cat sat on the mat", "the dog ate the bone", "a bird sang in the tree"] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(TEXTS, vocab_size=300, min_frequency=1)


def lm(kind, vocab_size):
    torch.manual_seed(0)
    shape = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=vocab_size, n_positions=64)
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(**shape)).eval()
    return GaamGPT2LMHeadModel(GaamGPT2Config(**shape)).eval()


@pytest.mark.parametrize("kind", ["gpt2", "gaam_gpt2"])
@pytest.mark.parametrize("sampling", [dict(do_sample=False), dict(do_sample=True, temperature=0.7)])
def test_probabilities_are_a_softmax_of_the_model_logits(tokenizer, kind, sampling):
    model = lm(kind, len(tokenizer))
    temperature = sampling.pop("temperature", 1.0)
    torch.manual_seed(1)
    explanation = explain(model, tokenizer, "the cat", max_new_tokens=5, top_k=4, temperature=temperature, **sampling)
    assert len(explanation.chosen) == len(explanation.alternatives) == 5
    ids = tokenizer("the cat", return_tensors="pt")["input_ids"]
    for step, chosen in enumerate(explanation.chosen):
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1]
        probabilities = torch.softmax(logits / temperature, -1)
        assert chosen.probability == pytest.approx(probabilities[chosen.token_id].item(), rel=1e-5)
        top = probabilities.topk(4)
        assert [choice.token_id for choice in explanation.alternatives[step]] == top.indices.tolist()
        assert [c.probability for c in explanation.alternatives[step]] == pytest.approx(top.values.tolist(), rel=1e-5)
        ids = torch.cat([ids, torch.tensor([[chosen.token_id]])], dim=1)
    assert explanation.text == tokenizer.decode([choice.token_id for choice in explanation.chosen])


def test_table_has_a_row_per_rank_and_a_column_per_position(tokenizer):
    explanation = explain(lm("gpt2", len(tokenizer)), tokenizer, "the dog", max_new_tokens=3, top_k=6)
    lines = explanation.table().splitlines()
    assert lines[0].split() == ["rank", "pos", "0", "pos", "1", "pos", "2"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3", "4", "5", "6"]
    # Greedy decoding takes the most probable token: rank 1 is marked in every column.
    assert lines[1].count("*") == 3 and "*" not in "".join(lines[2:])
    assert explanation.prompt in str(explanation)


@pytest.mark.parametrize("argument, value", [("max_new_tokens", 0), ("top_k", 0), ("temperature", 0.0)])
def test_bad_arguments_are_named(tokenizer, argument, value):
    with pytest.raises(ValueError, match=f"`{argument}`.*{value}"):
        explain(lm("gpt2", len(tokenizer)), tokenizer, "the", **{argument: value})
