"""The head registry: users' own heads (registered, saved with their code), the GAAM authors' "daam" head against an
independent implementation of their equations, "scalar_mix", and the heads' construction-time errors."""

import ast
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig

import hf_heads
from hf_heads import (
    Head,
    HeadedConfig,
    HeadedModelForSequenceClassification,
    HeadedModelForTokenClassification,
    register_head,
)
from hf_heads.models.headed import heads as heads_module
from hf_heads.models.headed import modeling_headed


def bert(layers=4, hidden=32):
    return BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=4, intermediate_size=64,
                      vocab_size=100, max_position_embeddings=64)


def make(backbone=None, num_labels=3, **head):
    torch.manual_seed(0)
    config = HeadedConfig(backbone_config=backbone or bert(), num_labels=num_labels, head_dropout=0.0, **head)
    return HeadedModelForSequenceClassification(config).eval()


def tokens(seed=0, size=3, length=8):
    return torch.randint(1, 100, (size, length), generator=torch.Generator().manual_seed(seed))


USER_HEAD = """
    import torch
    from torch import nn

    from hf_heads import Head, register_head


    class MaxPoolHead(Head):
        '''The largest value of each feature over real tokens, then a linear layer.'''

        feature = "backbone_hidden_states"
        default_learning_rate = 1e-2

        def __init__(self, config, task):
            super().__init__(config, task)
            self.scale = nn.Parameter(torch.ones(config.backbone_config.hidden_size))

        @classmethod
        def feature_shape(cls, backbone_config):
            return (None, backbone_config.hidden_size)

        @classmethod
        def extract(cls, outputs, attention_mask):
            return outputs.last_hidden_state

        def forward(self, hidden_states, attention_mask):
            masked = hidden_states.masked_fill(~attention_mask.bool()[..., None], float("-inf"))
            return self.scale * masked.amax(1)


    register_head("max_pool", MaxPoolHead)
"""


@pytest.fixture
def user_head_module(tmp_path, monkeypatch):
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "my_heads.py").write_text(textwrap.dedent(USER_HEAD))
    monkeypatch.syspath_prepend(str(folder))
    import my_heads

    yield my_heads
    heads_module.HEADS.pop("max_pool", None)
    sys.modules.pop("my_heads", None)


def test_a_registered_head_trains_saves_its_code_and_reloads(tmp_path, user_head_module, run_without_hf_heads):
    model = make(head_type="max_pool")
    assert type(model.head) is user_head_module.MaxPoolHead
    loss = model(input_ids=tokens(), labels=torch.tensor([0, 1, 2])).loss
    loss.backward()
    assert model.head.scale.grad is not None
    model.save_pretrained(tmp_path / "model")
    # The folder's copy imports what the folder carries; the user's own file is untouched.
    carried = textwrap.dedent(USER_HEAD).replace("from hf_heads import Head, register_head",
                                                 "from .heads import Head; from .heads import register_head")
    assert (tmp_path / "model" / "my_heads.py").read_text() == carried
    assert Path(user_head_module.__file__).read_text() == textwrap.dedent(USER_HEAD)
    assert model.config.head_code == "my_heads.MaxPoolHead"
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    torch.testing.assert_close(reloaded(input_ids=tokens()).logits, model(input_ids=tokens()).logits, rtol=0, atol=0)

    # A colleague's process: `hf_heads` is installed, the module defining the head is not importable.
    torch.save(tokens(), tmp_path / "ids.pt")
    script = f"""
        import torch
        from transformers import AutoModelForSequenceClassification
        import hf_heads  # registers the package's classes with the Auto classes; the user's head stays unknown
        folder = {str(tmp_path / "model")!r}
        try:
            AutoModelForSequenceClassification.from_pretrained(folder)
        except ValueError as error:
            assert "max_pool" in str(error) and "trust_remote_code=True" in str(error), error
        else:
            raise AssertionError("loaded a head whose code was not trusted")
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
        torch.save(model(input_ids=torch.load({str(tmp_path / "ids.pt")!r})).logits, {str(tmp_path / "out.pt")!r})
        """
    env = {**os.environ, "PYTHONPATH": str(Path(hf_heads.__file__).parents[1]), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), model(input_ids=tokens()).logits, rtol=0, atol=0)

    # A machine without `hf_heads` at all.
    run_without_hf_heads(
        f"""
        import torch
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
        logits = model.eval()(input_ids=torch.load({str(tmp_path / "ids.pt")!r})).logits
        torch.save(logits, {str(tmp_path / "out_without.pt")!r})
        """
    )
    without = torch.load(tmp_path / "out_without.pt")
    torch.testing.assert_close(without, model(input_ids=tokens()).logits, rtol=0, atol=0)


IMPORT_FORMS = {
    "from the package": ("from hf_heads import Head as Base, GaussianAdaptiveAttention",
                         "from .heads import Head as Base; from .gaam_layer import GaussianAdaptiveAttention"),
    "from a module": ("    from hf_heads.models.headed.heads import pool_mean  # indented, with a comment",
                      "    from .heads import pool_mean  # indented, with a comment"),
    "not carried": ("import hf_heads", "import hf_heads"),
    "other packages": ("from torch import nn", "from torch import nn"),
}


@pytest.mark.parametrize("form", IMPORT_FORMS)
def test_a_head_files_imports_from_hf_heads_become_imports_of_the_carried_files(tmp_path, form):
    given, expected = IMPORT_FORMS[form]
    path = tmp_path / "my_heads.py"
    path.write_text(f"import torch\nif True:\n    pass\n{given}\nx = 1\n")
    if form == "not carried":
        with pytest.warns(UserWarning, match=r"my_heads.py, line 4: `import hf_heads`.*only where `hf_heads` is"):
            text = modeling_headed._with_imports_from_carried_files(path)
    else:
        text = modeling_headed._with_imports_from_carried_files(path)
    assert text == f"import torch\nif True:\n    pass\n{expected}\nx = 1\n"


def test_saving_a_head_defined_in_main_is_refused_with_the_reason(tmp_path):
    class Scratch(Head):
        pass

    Scratch.__module__ = "__main__"
    register_head("scratch_head", Scratch)
    try:
        model = make(head_type="scratch_head")
        with pytest.raises(ValueError, match=r"Scratch is defined in '__main__'.*importable module file"):
            model.save_pretrained(tmp_path / "model")
        assert not (tmp_path / "model" / "model.safetensors").exists()
    finally:
        heads_module.HEADS.pop("scratch_head")


@pytest.mark.parametrize(
    "name, head_class, error, message",
    [
        ("my head", Head, ValueError, r"`name`='my head' must be an identifier-like string"),
        ("my_head", torch.nn.Linear, TypeError, r"`head_class`=.*Linear.* must be a subclass of `hf_heads.Head`"),
        ("mean", type("Mean", (Head,), {}), ValueError, r"`name`='mean' is a built-in head; pick another name"),
    ],
)
def test_register_head_names_bad_arguments(name, head_class, error, message):
    with pytest.raises(error, match=message):
        register_head(name, head_class)


def test_the_model_classes_hold_no_head_type_branches():
    """What a head reads and does lives with the head: the modelling file compares or indexes by no head name."""
    tree = ast.parse(Path(modeling_headed.__file__).read_text())
    used = {
        constant.value
        for node in ast.walk(tree)
        if isinstance(node, (ast.Compare, ast.Subscript, ast.Dict))
        for constant in ast.walk(node)
        if isinstance(constant, ast.Constant)
    }
    assert not used & set(heads_module.HEADS)


@pytest.mark.parametrize("model_class", [HeadedModelForSequenceClassification, HeadedModelForTokenClassification])
def test_forward_names_the_cached_column_of_every_built_in_head(model_class):
    """`Trainer` keeps only the dataset columns that `forward` names."""
    parameters = inspect.signature(model_class.forward).parameters
    for name, head_class in heads_module.HEADS.items():
        if model_class.task in head_class.tasks:
            assert head_class.feature in parameters, name


def daam_oracle(layer_states, head, classifier, num_heads):
    """The authors' head from their equations, head by head and layer chunk by chunk, in float64."""
    states = layer_states[:, 1:].double()  # hidden_states[1:]
    batch, layers, hidden = states.shape
    per_head = layers // num_heads
    gated = []
    for h in range(num_heads):
        chunk = states[:, h * per_head : (h + 1) * per_head]
        mean = chunk.sum(1, keepdim=True) / per_head
        variance = ((chunk - mean) ** 2).sum(1, keepdim=True) / per_head  # population variance
        offset, c = head.gate.mean_offset[h].double(), head.gate.c[h].double()
        y = (chunk - (mean + offset)) / torch.sqrt(variance + 1e-8)
        gated.append(chunk * torch.exp(-(y**2) / (2.0 * c)))
    image = torch.cat(gated, 1).reshape(batch, layers, *head.grid)
    first, second = head.convolutions[0], head.convolutions[2]
    image = torch.relu(torch.nn.functional.conv2d(image, first.weight.double(), first.bias.double(), padding=1))
    image = torch.relu(torch.nn.functional.conv2d(image, second.weight.double(), second.bias.double(), padding=1))
    return image.flatten(1) @ classifier.weight.double().T + classifier.bias.double()


@pytest.mark.parametrize("layers, hidden, fields, heads, grid", [
    (4, 32, {}, 2, (4, 8)),  # default heads: the largest of 8, 4, 2, 1 leaving each at least 2 layers
    (6, 24, {}, 2, (4, 6)),  # MiniLM's 6 layers
    (8, 36, dict(daam_num_heads=1, daam_grid=[3, 12]), 1, (3, 12)),  # DAAMv2: one head
])
def test_daam_equals_the_authors_equations(layers, hidden, fields, heads, grid):
    model = make(bert(layers, hidden), head_type="daam", daam_conv_channels=6, **fields).double()
    assert model.head.gate.num_heads == heads and model.head.grid == grid
    with torch.no_grad():  # away from the initial values, so that every term matters
        model.head.gate.mean_offset.normal_(0, 0.5)
        model.head.gate.c.uniform_(0.5, 3.0)
    layer_states = torch.randn(4, layers + 1, hidden, dtype=torch.float64)
    logits = model(backbone_layer_states=layer_states).logits
    torch.testing.assert_close(logits, daam_oracle(layer_states, model.head, model.classifier, heads))


def test_daam_reads_every_layer_but_the_embeddings():
    model = make(head_type="daam", daam_conv_channels=6)
    layer_states = torch.randn(2, 5, 32)
    changed = layer_states.clone()
    changed[:, 0] += 10.0
    expected = model(backbone_layer_states=layer_states).logits
    torch.testing.assert_close(model(backbone_layer_states=changed).logits, expected)


def test_gqdaam_projects_and_attends_across_layers_before_the_convolutions():
    model = make(head_type="daam", daam_variant="gqdaam", daam_conv_channels=6)
    assert model.head.grid == (16, 32) and model.classifier.in_features == 4 * 512
    attention = model.head.attention
    assert (attention.num_heads, attention.num_key_value_heads) == (8, 2) and attention.k_proj.out_features == 2 * 64
    layer_states = torch.randn(2, 5, 32)
    # Attention mixes layers: changing one layer's state changes what every layer contributes.
    changed = layer_states.clone()
    changed[:, 4] += 1.0
    gated = model.head.gate(layer_states[:, 1:])
    mixed = model.head.attention(model.head.projection(gated))
    mixed_changed = model.head.attention(model.head.projection(model.head.gate(changed[:, 1:])))
    assert not torch.allclose(mixed[:, 0], mixed_changed[:, 0])


def test_daam_initialises_as_the_authors_do():
    model = make(head_type="daam", daam_conv_channels=6)
    assert torch.equal(model.head.gate.c, torch.full_like(model.head.gate.c, 2.0))
    assert torch.equal(model.head.gate.mean_offset, torch.zeros_like(model.head.gate.mean_offset))
    # PyTorch's default for a convolution: uniform within 1/sqrt(fan_in), not transformers' normal(0, 0.02).
    weight = model.head.convolutions[0].weight
    bound = 1 / (weight[0].numel() ** 0.5)
    assert weight.abs().max() <= bound and weight.std() > 0.5 * bound / 3**0.5


def test_daam_importance_factor_is_the_gate_averaged_over_rows_and_features_min_max_scaled():
    model = make(head_type="daam", daam_conv_channels=6)
    with torch.no_grad():
        model.head.gate.mean_offset.normal_(0, 0.5)
    generator = torch.Generator().manual_seed(0)
    batches = [{"backbone_layer_states": torch.randn(3, 5, 32, generator=generator)} for _ in range(2)]
    factors = hf_heads.importance_factors(model, batches)
    states = torch.cat([batch["backbone_layer_states"] for batch in batches])[:, 1:]
    gate_sum = torch.zeros(4)
    for h in range(2):
        chunk = states[:, 2 * h : 2 * h + 2]
        mean, variance = chunk.mean(1, keepdim=True), chunk.var(1, keepdim=True, unbiased=False)
        y = (chunk - (mean + model.head.gate.mean_offset[h])) / torch.sqrt(variance + 1e-8)
        gate_sum[2 * h : 2 * h + 2] = torch.exp(-(y**2) / (2 * model.head.gate.c[h])).mean((0, 2)).detach()
    expected = (gate_sum - gate_sum.min()) / (gate_sum.max() - gate_sum.min())
    assert factors.names == ["head.gate"]
    torch.testing.assert_close(factors.factors[0], expected, rtol=1e-5, atol=1e-6)


def test_scalar_mix_is_a_softmax_weighted_sum_of_the_layers_times_a_scale():
    model = make(head_type="scalar_mix")
    with torch.no_grad():
        model.head.layer_weights.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0]))
        model.head.scale.fill_(1.7)
    layer_states = torch.randn(2, 5, 32)
    weights = torch.exp(model.head.layer_weights) / torch.exp(model.head.layer_weights).sum()
    mixed = 1.7 * sum(weights[i] * layer_states[:, i] for i in range(5))
    expected = mixed @ model.classifier.weight.T + model.classifier.bias
    torch.testing.assert_close(model(backbone_layer_states=layer_states).logits, expected)


@pytest.mark.parametrize(
    "layers, fields, message",
    [
        (4, dict(daam_num_heads=4),
         r"head_type='daam': `daam_num_heads`=4 does not fit; .* 4 layers into equal chunks of at least 2, so use "
         r"one of \[1, 2\]"),
        (6, dict(daam_num_heads=4), r"`daam_num_heads`=4 does not fit; .* 6 layers .* one of \[1, 2, 3\]"),
        (1, dict(), r"`daam_num_heads`=1 does not fit; .* 1 layers"),
        (4, dict(daam_grid=[5, 5]),
         r"head_type='daam': `daam_grid`=\[5, 5\] does not fit; .* must equal 32 \(e.g. \[4, 8\]"),
        (4, dict(daam_variant="gqdaam", daam_grid=[4, 8]), r"`daam_grid`=\[4, 8\] does not fit; .* must equal 512"),
        (4, dict(daam_variant="gq"), r"`daam_variant`='gq' is not supported; accepted values: 'daam', 'gqdaam'"),
        (4, dict(daam_conv_channels=0), r"`daam_conv_channels` must be a positive integer, got 0"),
    ],
)
def test_daam_that_cannot_fit_the_backbone_fails_at_construction(layers, fields, message):
    with pytest.raises(ValueError, match=message):
        HeadedConfig(backbone_config=bert(layers), head_type="daam", **fields)


def test_every_head_declares_a_default_learning_rate():
    for name, head_class in heads_module.HEADS.items():
        assert 0 < head_class.default_learning_rate < 1, name


def test_a_head_naming_per_token_states_but_inheriting_the_pooled_extract_is_refused_at_definition():
    with pytest.raises(TypeError, match=r"Careless sets feature='backbone_hidden_states'.*override `extract`"):

        class Careless(Head):
            feature = "backbone_hidden_states"

    class Careful(Head):  # the same name with its own extraction is fine
        feature = "backbone_hidden_states"

        @classmethod
        def extract(cls, outputs, attention_mask):
            return outputs.last_hidden_state
