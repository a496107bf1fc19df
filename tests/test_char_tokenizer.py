"""The character tokenizer: text8 round trips, unknown characters, save/load through `AutoTokenizer` and remote code."""

import pytest
from transformers import AutoTokenizer

from hf_heads import CharTokenizer
from hf_heads.tokenization import TEXT8_ALPHABET


def test_text8_text_round_trips_one_token_per_character():
    tokenizer = CharTokenizer()
    text = "anarchism originated as a term of abuse"
    ids = tokenizer(text)["input_ids"]
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.vocab_size == 3 + len(TEXT8_ALPHABET)


def test_upper_case_is_lowered_and_unknown_characters_become_unk():
    tokenizer = CharTokenizer()
    ids = tokenizer("Hi, 2")["input_ids"]
    assert ids[:2] == tokenizer("hi")["input_ids"]
    assert ids[2] == ids[4] == tokenizer.unk_token_id
    assert CharTokenizer(do_lower_case=False)("H")["input_ids"] == [tokenizer.unk_token_id]


def test_padding_uses_the_pad_token_and_the_mask():
    batch = CharTokenizer()(["ab", "abcd"], padding=True)
    assert batch["input_ids"][0][2:] == [CharTokenizer().pad_token_id] * 2
    assert batch["attention_mask"] == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_saves_and_loads_through_auto_tokenizer(tmp_path):
    tokenizer = CharTokenizer(alphabet="xyz .")
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is CharTokenizer
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert loaded("zyx. q")["input_ids"] == tokenizer("zyx. q")["input_ids"]


def test_saved_folder_loads_without_hf_heads(tmp_path, run_without_hf_heads):
    CharTokenizer(alphabet="xyz .").save_pretrained(tmp_path / "tok")
    output = run_without_hf_heads(
        f"""
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained({str(tmp_path / "tok")!r}, trust_remote_code=True)
        print(tokenizer("zyx. q")["input_ids"])
        """
    )
    assert output.strip() == str(CharTokenizer(alphabet="xyz .")("zyx. q")["input_ids"])


@pytest.mark.parametrize(
    "alphabet, message",
    [("", "non-empty"), ("abca", "repeated"), (None, "non-empty")],
)
def test_bad_alphabets_are_refused(alphabet, message):
    with pytest.raises(ValueError, match=message):
        CharTokenizer(alphabet=alphabet)


def test_a_special_token_inside_the_alphabet_is_refused():
    with pytest.raises(ValueError, match="special tokens"):
        CharTokenizer(alphabet="ab#", pad_token="#")
