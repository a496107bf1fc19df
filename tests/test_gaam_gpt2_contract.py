"""GAAM-GPT2 keeps transformers' model contract: what GPT-2's classes do, ours do, in both GAAM placements.

Oracles: transformers' own GPT-2 (same weights), the model's own full forward pass (for caches and generation), and
GPT-2's class attributes and signatures. `benchmarks/conformance.py` runs transformers' own test suite on top of this.
"""

import inspect

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    GPT2Model,
)
from transformers.cache_utils import DummyLayer, DynamicCache, DynamicLayer
from transformers.generation import GenerationMixin

from hf_heads import (
    GaamGPT2Config,
    GaamGPT2ForQuestionAnswering,
    GaamGPT2ForSequenceClassification,
    GaamGPT2ForTokenClassification,
    GaamGPT2LMHeadModel,
    GaamGPT2Model,
)
from hf_heads.models.readable_weights import MismatchedWeightsError


TINY = dict(
    n_layer=3, n_embd=32, n_head=4, vocab_size=120, n_positions=64, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    num_labels=3, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
)
GPT2_COUNTERPART = {
    GaamGPT2Model: GPT2Model,
    GaamGPT2LMHeadModel: GPT2LMHeadModel,
    GaamGPT2ForSequenceClassification: GPT2ForSequenceClassification,
    GaamGPT2ForTokenClassification: GPT2ForTokenClassification,
    GaamGPT2ForQuestionAnswering: GPT2ForQuestionAnswering,
}
# GAAM active in every setting: gates opened, and "replace" in every block or in some.
PLACEMENTS = {
    "augment": dict(gaam_placement="augment", gaam_gate_init=0.5),
    "replace": dict(gaam_placement="replace", classifier_pooling="mean"),
    "replace-block-0": dict(gaam_placement="replace", gaam_layers=[0]),
}


def config(placement="augment", **overrides) -> GaamGPT2Config:
    return GaamGPT2Config(**{**TINY, **PLACEMENTS[placement], **overrides})


def build(model_class, placement="augment", attn_implementation="eager", **overrides):
    torch.manual_seed(0)
    return model_class._from_config(config(placement, **overrides), attn_implementation=attn_implementation).eval()


def ids(size=2, length=9, seed=0):
    return torch.randint(1, TINY["vocab_size"], (size, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("model_class", list(GPT2_COUNTERPART))
def test_return_dict_false_gives_the_same_values_as_a_tuple(model_class, placement):
    model = build(model_class, placement)
    inputs = dict(input_ids=ids(), attention_mask=torch.ones(2, 9, dtype=torch.long))
    as_dict = model(**inputs)
    as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple)
    expected = [value for value in as_dict.to_tuple() if torch.is_tensor(value)]
    assert len(expected) >= 1
    for mine, reference in zip([value for value in as_tuple if torch.is_tensor(value)], expected):
        torch.testing.assert_close(mine, reference, rtol=0, atol=0)


@pytest.mark.parametrize("model_class", list(GPT2_COUNTERPART))
def test_forward_takes_every_argument_gpt2s_forward_takes(model_class):
    ours = list(inspect.signature(model_class.forward).parameters)
    gpt2 = list(inspect.signature(GPT2_COUNTERPART[model_class].forward).parameters)
    assert ours == gpt2


@pytest.mark.parametrize("model_class", list(GPT2_COUNTERPART))
def test_classes_are_gpt2s_classes(model_class):
    """Built by subclassing: a transformers release that changes GPT-2 changes these classes too."""
    assert issubclass(model_class, GPT2_COUNTERPART[model_class])
    assert model_class._can_record_outputs is GPT2Model._can_record_outputs
    assert model_class.supports_gradient_checkpointing and model_class._supports_sdpa
    assert model_class._no_split_modules == ["GaamGPT2Block"]


@pytest.mark.parametrize("model_class", list(GPT2_COUNTERPART))
def test_classes_that_generate_name_generation_mixin_among_their_bases_as_gpt2s_do(model_class):
    """transformers' generation tests require every class that generates to list `GenerationMixin` in `__bases__`."""
    gpt2 = GPT2_COUNTERPART[model_class]
    assert (GenerationMixin in model_class.__bases__) == (GenerationMixin in gpt2.__bases__)
    assert model_class.can_generate() == gpt2.can_generate()


def test_attentions_hidden_states_and_caches_equal_gpt2s_when_the_gates_are_closed(tmp_path):
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel._from_config(GPT2Config(**TINY), attn_implementation="eager").eval()
    gpt2.save_pretrained(tmp_path)
    ours = GaamGPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager", gaam_gate_init=0.0).eval()
    inputs = dict(input_ids=ids(), output_attentions=True, output_hidden_states=True, use_cache=True)
    expected, actual = gpt2(**inputs), ours(**inputs)
    for name in ("attentions", "hidden_states"):
        assert len(actual[name]) == len(expected[name])
        for mine, reference in zip(actual[name], expected[name]):
            torch.testing.assert_close(mine, reference, rtol=0, atol=0)
    for mine, reference in zip(actual.cache.layers, expected.cache.layers):
        torch.testing.assert_close(mine.keys, reference.keys, rtol=0, atol=0)


@pytest.mark.parametrize("placement,attending", [("augment", 3), ("replace-block-0", 2), ("replace", 0)])
@pytest.mark.parametrize("model_class", list(GPT2_COUNTERPART))
def test_one_attention_map_per_block_that_attends(model_class, placement, attending):
    model = build(model_class, placement)
    outputs = model(input_ids=ids(), output_attentions=True, output_hidden_states=True)
    assert len(outputs.attentions) == attending
    assert all(attention.shape == (2, TINY["n_head"], 9, 9) for attention in outputs.attentions)
    assert len(outputs.hidden_states) == TINY["n_layer"] + 1


@pytest.mark.parametrize("model_class", list(GPT2_COUNTERPART))
def test_sdpa_equals_eager_with_gaam_active(model_class):
    eager, sdpa = build(model_class, "augment"), build(model_class, "augment", attn_implementation="sdpa")
    assert sdpa.config._attn_implementation == "sdpa"
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, :3] = 0  # left padding
    inputs = dict(input_ids=ids(), attention_mask=mask)
    compared = 0
    for mine, reference in zip(sdpa(**inputs).to_tuple(), eager(**inputs).to_tuple()):
        if not torch.is_tensor(mine):
            continue
        if mine.dim() >= 2 and mine.shape[:2] == mask.shape:
            # Padding positions attend to nothing; what each backend writes there is arbitrary (GPT-2's too).
            mine, reference = mine[mask.bool()], reference[mask.bool()]
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-5)
        compared += 1
    assert compared >= 1


def _incremental_logits(model, tokens, split, cache=None):
    """Logits of tokens[split:] fed one at a time after a prefix, through the returned cache."""
    outputs = model(input_ids=tokens[:, :split], cache=cache, use_cache=True)
    cache, logits = outputs.cache, [outputs.logits]
    for position in range(split, tokens.shape[1]):
        outputs = model(
            input_ids=tokens[:, position : position + 1], cache=cache, use_cache=True,
            position_ids=torch.full((tokens.shape[0], 1), position),
        )
        cache = outputs.cache
        logits.append(outputs.logits)
    return torch.cat(logits, dim=1), cache


@pytest.mark.parametrize("given", ["none", "lazy", "from-config"])
@pytest.mark.parametrize("placement", ["augment", "replace-block-0"])
def test_the_cache_holds_attention_state_and_decodes_like_a_full_pass(placement, given):
    model = build(GaamGPT2LMHeadModel, placement)
    tokens = ids(length=10)
    cache = {"none": None, "lazy": DynamicCache(), "from-config": DynamicCache(config=model.config)}[given]
    logits, cache = _incremental_logits(model, tokens, split=6, cache=cache)
    torch.testing.assert_close(logits, model(input_ids=tokens).logits, rtol=1e-5, atol=1e-5)
    assert isinstance(cache, DynamicCache) and cache.get_seq_length() == 10
    attending = [hasattr(block, "attn") for block in model.transformer.h]
    # A "replace" block keeps no key/value state: transformers' `DummyLayer`, never an empty attention layer.
    assert [isinstance(layer, DynamicLayer) for layer in cache.layers] == attending
    assert [isinstance(layer, DummyLayer) for layer in cache.layers] == [not a for a in attending]
    assert all(layer.keys.shape[-2] == 10 for layer in cache.layers if isinstance(layer, DynamicLayer))


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_decoding_a_left_padded_batch_step_by_step_continues_the_full_passs_positions(placement):
    """transformers' convention: each step gets the new tokens and the mask of every token so far, no position ids."""
    model = build(GaamGPT2LMHeadModel, placement)
    tokens = ids(length=8)
    mask = torch.ones_like(tokens)
    mask[1, :3] = 0  # row 1 left-padded
    full = model(input_ids=tokens, attention_mask=mask).logits
    outputs = model(input_ids=tokens[:, :4], attention_mask=mask[:, :4], use_cache=True)
    steps = [outputs.logits]
    for position in range(4, tokens.shape[1]):
        outputs = model(
            input_ids=tokens[:, position : position + 1], attention_mask=mask[:, : position + 1],
            cache=outputs.cache, use_cache=True,
        )
        steps.append(outputs.logits)
    real = mask.bool()
    torch.testing.assert_close(torch.cat(steps, dim=1)[real], full[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("given", ["none", "lazy", "from-config"])
def test_a_replace_block_has_no_cache_state_from_the_first_call(given):
    model = build(GaamGPT2Model, "replace-block-0")
    cache = {"none": None, "lazy": DynamicCache(), "from-config": DynamicCache(config=model.config)}[given]
    cache = model(input_ids=ids(), cache=cache, use_cache=True).cache
    assert [type(layer) for layer in cache.layers] == [DummyLayer, DynamicLayer, DynamicLayer]
    assert cache.get_seq_length() == 9


@pytest.mark.parametrize("model_class", [GaamGPT2Model, GaamGPT2LMHeadModel, GaamGPT2ForSequenceClassification])
def test_an_attention_free_model_returns_no_cache(model_class):
    model = build(model_class, "replace")
    assert model(input_ids=ids(), use_cache=True).cache is None
    assert model(input_ids=ids(), cache=DynamicCache(config=model.config), use_cache=True).cache is None


def _greedy_by_full_passes(model, prompt, new_tokens):
    tokens = prompt
    for _ in range(new_tokens):
        next_token = model(input_ids=tokens).logits[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, next_token], dim=1)
    return tokens


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_generation_with_and_without_cache_equals_greedy_by_full_passes(placement):
    model = build(GaamGPT2LMHeadModel, placement)
    prompt = ids(length=4)
    expected = _greedy_by_full_passes(model, prompt, new_tokens=6)
    for use_cache in (False, True):
        generated = model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False, use_cache=use_cache
        )
        assert torch.equal(generated, expected), (placement, use_cache)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_left_padded_generation_equals_each_row_generated_alone(placement, use_cache):
    """transformers' `test_left_padding_compatibility` checks one forward pass, and its "replace" run skips it (the
    suite ties padding to attention weights); here every generation step of a left-padded batch, in every placement."""
    model = build(GaamGPT2LMHeadModel, placement)
    short, long = ids(size=1, length=3, seed=1), ids(size=1, length=6, seed=2)
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], dim=1), long])
    mask = torch.cat([torch.cat([torch.zeros(1, 3), torch.ones(1, 3)], dim=1), torch.ones(1, 6)]).long()
    generated = model.generate(
        batch, attention_mask=mask, max_new_tokens=5, do_sample=False, use_cache=use_cache, pad_token_id=0
    )
    for row, prompt in enumerate((short, long)):
        alone = _greedy_by_full_passes(model, prompt, new_tokens=5)
        assert torch.equal(generated[row, 6:], alone[0, prompt.shape[1] :]), (placement, row)


@pytest.mark.parametrize("placement,attending", [("augment", 3), ("replace-block-0", 2), ("replace", 0)])
@pytest.mark.parametrize("use_cache", [True, False])
def test_generate_returns_attentions_per_step_and_never_an_empty_cache(placement, attending, use_cache):
    model = build(GaamGPT2LMHeadModel, placement)
    prompt = ids(length=4)
    outputs = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=3, do_sample=False, use_cache=use_cache,
        return_dict_in_generate=True, output_attentions=True, output_hidden_states=True,
    )
    assert [len(step) for step in outputs.attentions] == [attending] * 3
    assert all(len(step) == TINY["n_layer"] + 1 for step in outputs.hidden_states)
    if use_cache and attending:
        assert outputs.cache.get_seq_length() == prompt.shape[1] + 2  # the last new token is never fed back
    else:
        assert outputs.cache is None


@pytest.mark.parametrize("placement", ["augment", "replace-block-0"])
def test_static_cache_generation_equals_dynamic(placement):
    model = build(GaamGPT2LMHeadModel, placement)
    prompt = ids(length=4)
    kwargs = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=5, do_sample=False)
    static = model.generate(prompt, cache_implementation="static", **kwargs)
    assert torch.equal(static, model.generate(prompt, **kwargs))


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(placement):
    tokens = ids(size=3)
    grads = []
    for checkpointing in (False, True):
        model = build(GaamGPT2LMHeadModel, placement).train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        grads.append({name: parameter.grad for name, parameter in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    # Recomputed blocks sum some gradients in another order: up to ~2e-7 apart on gradients of order 0.1-1 (float32
    # rounding, with or without the fused GAAM kernel); a wrong recomputation would be far above 1e-6.
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6, msg=name)
    gaam = [name for name in grads[1] if ".gaam" in name]
    assert gaam and all(grads[1][name].abs().sum() > 0 for name in gaam)


@pytest.mark.parametrize("model_class", list(GPT2_COUNTERPART))
def test_legacy_gradient_checkpointing_config_flag_reaches_the_gaam_blocks(model_class):
    legacy = config()
    legacy.gradient_checkpointing = True
    model = model_class(legacy)
    blocks = (model if model_class is GaamGPT2Model else model.transformer).h
    assert all(block.gradient_checkpointing for block in blocks)


def test_lm_head_stays_tied_to_the_embeddings(tmp_path):
    model = build(GaamGPT2LMHeadModel)
    assert model.lm_head.weight is model.transformer.wte.weight
    model.save_pretrained(tmp_path)
    reloaded = GaamGPT2LMHeadModel.from_pretrained(tmp_path)
    assert reloaded.lm_head.weight is reloaded.transformer.wte.weight
    torch.testing.assert_close(reloaded.lm_head.weight, model.lm_head.weight, rtol=0, atol=0)


def test_mismatched_checkpoint_raises_a_runtime_error_naming_the_remedy(tmp_path):
    build(GaamGPT2ForSequenceClassification).save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match=r"shapes do not fit.*ignore_mismatched_sizes=True") as raised:
        GaamGPT2ForSequenceClassification.from_pretrained(tmp_path, num_labels=5)
    assert isinstance(raised.value, MismatchedWeightsError)
    model = GaamGPT2ForSequenceClassification.from_pretrained(tmp_path, num_labels=5, ignore_mismatched_sizes=True)
    assert model.score.weight.shape == (5, TINY["n_embd"])


def test_placeholder_sizes_are_accepted_as_gpt2config_accepts_them():
    GPT2Config(hidden_size=0, num_hidden_layers=0, num_attention_heads=0)
    placeholder = GaamGPT2Config(hidden_size=0, num_hidden_layers=0, num_attention_heads=0, gaam_layers=[0])
    placeholder.n_layer, placeholder.n_head = 2, 4
    with pytest.raises(ValueError, match=r"`n_embd`=0: GAAM over the features needs at least 2"):
        GaamGPT2Model(placeholder)  # built before its width is filled in: the size named, not a head count
    placeholder.n_embd = 32
    assert len(GaamGPT2Model(placeholder).h) == 2


def test_gate_init_opens_new_gates_and_keeps_a_checkpoints_own(tmp_path):
    model = build(GaamGPT2Model, "augment", gaam_gate_init=0.25)
    assert all(block.gaam_gate.weight.item() == 0.25 for block in model.h)
    with torch.no_grad():
        model.h[0].gaam_gate.weight.fill_(-1.0)
    model.save_pretrained(tmp_path)
    reloaded = GaamGPT2Model.from_pretrained(tmp_path, gaam_gate_init=2.0)
    assert [block.gaam_gate.weight.item() for block in reloaded.h] == [-1.0, 0.25, 0.25]


@pytest.mark.parametrize("model_class", [cls for cls in GPT2_COUNTERPART if cls is not GaamGPT2Model])
def test_a_plain_trainer_scales_the_loss_as_the_model_computes_it(model_class, tmp_path):
    """Users' own `Trainer`: the classifiers' per-batch mean is not divided again by `num_items_in_batch`, and the
    causal LM names its loss so `Trainer` counts shifted labels."""
    from transformers import Trainer, TrainingArguments

    model = build(model_class)
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[]))
    uses_num_items = model_class is GaamGPT2LMHeadModel
    assert trainer.model_accepts_loss_kwargs is uses_num_items
    if uses_num_items:
        assert model.loss_type == "ForCausalLM"
