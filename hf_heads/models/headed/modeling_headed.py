"""`headed` models: a task head from the registry in `heads.py` on any `AutoModel` backbone.

Every input the backbone's `forward` accepts reaches it (`token_type_ids`, `position_ids`, ...). Padding is read
from `attention_mask`; position ids are derived from it only for causal (decoder) backbones that take them and were
given none, where left padding would otherwise shift every position: encoders number positions their own way
(RoBERTa from `padding_idx + 1`) and get exactly what the plain backbone would.

With a frozen backbone, `forward` also accepts what the backbone would have produced for the head (the column named
by the head's `feature`, which `hf_heads.features.cache_backbone_features` stores) instead of `input_ids`, so a head
trains for many epochs at the cost of one backbone pass.
"""

import ast
import importlib
import inspect
import sys
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.dynamic_module_utils import get_class_from_dynamic_module, get_relative_import_files
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
)
from transformers.utils import can_return_tuple

from .configuration_headed import HeadedConfig
from .gaam_layer import GaussianAdaptiveAttention
from .heads import HEADS, SEQUENCE, TOKEN, TOKEN_ALIASES, Head, head_class_for
from .losses import classification_loss, token_classification_loss
from .modeling_gaam_gpt2 import GaamGPT2Model
from .readable_weights import ReadableWeightsMixin


# This package's backbones, built from the code this folder carries (`AutoModel` knows them only where `hf_heads`
# is imported).
CARRIED_BACKBONES = {GaamGPT2Model.config_class.model_type: GaamGPT2Model}
HUB_ARGUMENTS = ("cache_dir", "revision", "token", "local_files_only")


# The files every `headed` folder carries beside its modeling code, from which a user's head file may import.
CARRIED_FILES = ("heads", "gaam_layer", "losses", "readable_weights")


def _with_imports_from_carried_files(path: Path) -> str:
    """
    The text of a user's head file whose `from hf_heads... import Name` statements import each name from the file the
    folder carries it in (`from hf_heads import Head` becomes `from .heads import Head`), so that the folder loads
    where `hf_heads` is not installed. An import of anything the folder does not carry stays, with a warning.
    """
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    package = __name__.rpartition(".")[0]
    imports = [node for node in ast.walk(ast.parse(text)) if isinstance(node, (ast.Import, ast.ImportFrom))]
    for node in sorted(imports, key=lambda node: (node.lineno, node.col_offset), reverse=True):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            modules = [node.module or ""] if node.level == 0 else []
        if not any(module.split(".")[0] == "hf_heads" for module in modules):
            continue
        statements = None
        if isinstance(node, ast.ImportFrom):
            statements = _from_carried_files(node, package)
        if statements is None:
            warnings.warn(
                f"{path.name}, line {node.lineno}: `{ast.unparse(node)}` imports from `hf_heads` something a model "
                f"folder does not carry, so the saved folder loads only where `hf_heads` is installed. Names from "
                f"{', '.join(f'{name}.py' for name in CARRIED_FILES)} travel (e.g. `from hf_heads import Head`).",
                stacklevel=4,
            )
            continue
        # Replace exactly the statement's characters: anything sharing its lines stays.
        first, last = node.lineno - 1, node.end_lineno - 1
        replaced = lines[first][: node.col_offset] + "; ".join(statements) + lines[last][node.end_col_offset :]
        lines[first : last + 1] = [replaced]
    return "".join(lines)


def _from_carried_files(node: ast.ImportFrom, package: str) -> list[str] | None:
    """Relative imports of `node`'s names from the carried files defining them, or None if one is not carried."""
    try:
        source = importlib.import_module(node.module)
    except ImportError:
        return None
    carried = {name: importlib.import_module(f"{package}.{name}") for name in CARRIED_FILES}
    statements = []
    for alias in node.names:
        value = getattr(source, alias.name, None)
        holding = [name for name, module in carried.items() if getattr(module, alias.name, None) is value]
        if value is None or not holding:
            return None
        # The file that defines it (`heads.py` also imports `GaussianAdaptiveAttention`, defined in `gaam_layer.py`).
        defining = [name for name in holding if carried[name].__name__ == getattr(value, "__module__", None)]
        home = (defining or holding)[0]
        statements.append(f"from .{home} import {alias.name}" + (f" as {alias.asname}" if alias.asname else ""))
    return statements


def build_backbone(config) -> nn.Module:
    carried = CARRIED_BACKBONES.get(config.model_type)
    return carried(config) if carried is not None else AutoModel.from_config(config)


def is_decoder(backbone: nn.Module) -> bool:
    """
    Whether the backbone attends causally: one of its modules says so (GPT-2, Llama, ..., BERT with `is_decoder`), or
    transformers knows its model type only as a causal LM (XGLM's attention modules do not say it).
    """
    if any(getattr(module, "is_causal", False) is True for module in backbone.modules()):
        return True
    model_type = backbone.config.model_type
    return (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES
    )


class HeadedPreTrainedModel(ReadableWeightsMixin, PreTrainedModel):
    config_class = HeadedConfig
    config: HeadedConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True
    # The loss is a mean over the batch's labels (no `num_items_in_batch`): `Trainer` must not rescale it.
    accepts_loss_kwargs = False
    task: str  # `SEQUENCE` or `TOKEN`, set by each task's class

    def __init__(self, config: HeadedConfig):
        head_class = self._head_class(config)
        head_class.check(config, self.task)
        super().__init__(config)
        self.backbone = build_backbone(config.backbone_config)
        self.head = head_class(config, self.task)
        self.dropout = nn.Dropout(config.head_dropout)
        self.classifier = nn.Linear(self.head.output_size, config.num_labels)
        parameters = inspect.signature(self.backbone.forward).parameters
        # Decoders count positions from the first token, padding included: a left-padded row would otherwise not
        # predict as it does alone. Encoders (bidirectional) keep their own numbering.
        self._derives_positions = "position_ids" in parameters and is_decoder(self.backbone)
        self.post_init()
        self.apply_freeze()

    @classmethod
    def _head_class(cls, config: HeadedConfig):
        if cls.task == TOKEN and config.head_type in TOKEN_ALIASES:
            head_class = head_class_for(config.head_type, cls.task)  # warns about the old name
            config.head_type = TOKEN_ALIASES[config.head_type]
            return head_class
        if config.head_type in HEADS:
            return HEADS[config.head_type]
        raise ValueError(
            f"`head_type`={config.head_type!r} is not registered in this process. Import the module that registers "
            f"it, or load the folder with `trust_remote_code=True` (it carries the head's code: {config.head_code})."
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """
        As `PreTrainedModel.from_pretrained`; with `trust_remote_code=True`, a head registered outside this package
        is registered from the code the folder carries (see `save_pretrained`).
        """
        if kwargs.get("trust_remote_code"):
            config = kwargs.get("config")
            if not isinstance(config, HeadedConfig):
                hub = {name: kwargs[name] for name in HUB_ARGUMENTS if name in kwargs}
                config = HeadedConfig.from_pretrained(pretrained_model_name_or_path, **hub)
            if config.head_type not in HEADS and config.head_code is not None:
                head_class = get_class_from_dynamic_module(config.head_code, pretrained_model_name_or_path)
                HEADS[config.head_type] = head_class
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, GaussianAdaptiveAttention):
            # As in `gaam_gpt2`: unit-width Gaussians centred on the mean, perturbed so that they do not stay equal.
            init.zeros_(module.mean_offsets)
            init.normal_(module.c, mean=1.0, std=0.1)
        elif hasattr(module, "init_parameters"):
            # Heads whose parameters are not plain layers (or whose authors' initialisation differs) set their own.
            module.init_parameters()

    @classmethod
    def from_backbone(
        cls, name_or_path, head_type: str = "mean", num_labels: int = 2, backbone_kwargs=None, **head_kwargs
    ):
        """
        A headed model whose backbone weights come from `name_or_path` (a Hub id or a folder; a causal LM checkpoint
        works too: its LM head is dropped and every backbone weight is kept). Head fields go in `head_kwargs`.
        """
        backbone = AutoModel.from_pretrained(name_or_path, **(backbone_kwargs or {}))
        # The backbone keeps the attention implementation it was loaded with and the whole model takes its dtype, as
        # `from_pretrained(..., attn_implementation=..., dtype=...)` loads a model (`backbone_kwargs` may set either).
        # Read before the headed model is built: building it sets the implementation of the config it shares.
        attn_implementation = backbone.config._attn_implementation
        config = HeadedConfig(
            backbone_config=backbone.config, head_type=head_type, num_labels=num_labels, **head_kwargs
        )
        model = cls(config).to(backbone.dtype)
        model.backbone.set_attn_implementation(attn_implementation)
        model.backbone.load_state_dict(backbone.state_dict())
        model.apply_freeze()
        return model

    def apply_freeze(self) -> None:
        """Freeze the backbone when `config.freeze_backbone` is set (called at construction and by `from_backbone`)."""
        self.backbone.requires_grad_(not self.config.freeze_backbone)
        # Heads read hidden states, never a backbone's pooler (BERT's): left trainable it would get no gradient, which
        # distributed data parallel refuses.
        pooler = getattr(self.backbone, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        # A frozen backbone is a fixed feature extractor: its dropout stays off, so training sees the same features
        # that inference (and a feature cache) sees.
        if self.config.freeze_backbone:
            self.backbone.eval()
        return self

    @property
    def feature_name(self) -> str:
        """The `forward` argument (and cached column) holding what this model's head reads from the backbone."""
        return self.head.feature

    @property
    def default_learning_rate(self) -> float:
        """The head's `default_learning_rate`: the learning rate the recipes use for this model's head."""
        return self.head.default_learning_rate

    @property
    def feature_is_per_token(self) -> bool:
        return None in self.head.feature_shape(self.config.backbone_config)

    def save_pretrained(self, save_directory, *args, **kwargs):
        head_class = type(self.head)
        registered_here = head_class.__module__ == Head.__module__
        if not registered_here:
            self._check_head_code_can_travel(head_class)
            self.config.head_code = f"{head_class.__module__.rsplit('.', 1)[-1]}.{head_class.__name__}"
        super().save_pretrained(save_directory, *args, **kwargs)
        if not registered_here:
            # Like `custom_object_save` for the model's own classes: the head's file and its same-folder imports,
            # importing from the files the folder carries instead of from `hf_heads`.
            source = Path(sys.modules[head_class.__module__].__file__)
            for path in [source, *map(Path, get_relative_import_files(source))]:
                (Path(save_directory) / path.name).write_text(_with_imports_from_carried_files(path))

    @staticmethod
    def _check_head_code_can_travel(head_class) -> None:
        module = sys.modules.get(head_class.__module__)
        if head_class.__module__ == "__main__" or getattr(module, "__file__", None) is None:
            raise ValueError(
                f"Cannot save a model whose head class {head_class.__qualname__} is defined in "
                f"{head_class.__module__!r}: a saved folder carries its head's code, so the class must live in an "
                "importable module file (e.g. my_heads.py) from which `hf_heads.register_head` registers it."
            )

    def _run_backbone(self, input_ids, attention_mask, inputs_embeds, backbone_inputs: dict):
        if input_ids is None and inputs_embeds is None:
            raise ValueError(
                f"Pass `input_ids` (or `inputs_embeds`), or the cached backbone features `{self.feature_name}`."
            )
        reference = input_ids if input_ids is not None else inputs_embeds[..., 0]
        if attention_mask is None:
            attention_mask = torch.ones(reference.shape[:2], dtype=torch.long, device=reference.device)
        # The head needs every layer's states or the last one; the user may ask for the backbone's hidden states and
        # attentions in the outputs, as from the plain backbone's classifiers (keyword, else the config's flag).
        requested = {
            flag: getattr(self.config, flag, False) if backbone_inputs.get(flag) is None else backbone_inputs[flag]
            for flag in ("output_hidden_states", "output_attentions")
        }
        for flag in requested:
            backbone_inputs.pop(flag, None)
        if requested["output_attentions"]:
            backbone_inputs["output_attentions"] = True
        if self._derives_positions and backbone_inputs.get("position_ids") is None:
            backbone_inputs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        backbone_inputs = {name: value for name, value in backbone_inputs.items() if value is not None}
        outputs = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=self.head.reads_every_layer or bool(requested["output_hidden_states"]),
            **backbone_inputs,
        )
        missing = "last_hidden_state" if getattr(outputs, "last_hidden_state", None) is None else None
        if self.head.reads_every_layer and getattr(outputs, "hidden_states", None) is None:
            missing = "hidden_states"
        if missing:
            raise ValueError(
                f"The backbone ({type(self.backbone).__name__}) returned no `{missing}`; `headed` models need a "
                "backbone whose outputs carry its hidden states (an `AutoModel` encoder or decoder)."
            )
        passed_on = {
            "hidden_states": outputs.hidden_states if requested["output_hidden_states"] else None,
            "attentions": getattr(outputs, "attentions", None) if requested["output_attentions"] else None,
        }
        return outputs, attention_mask, passed_on

    def backbone_features(self, input_ids=None, attention_mask=None, inputs_embeds=None, **backbone_inputs):
        """What the head reads, from a backbone pass: `{feature_name: ...}`, plus `attention_mask` if per token."""
        return self._backbone_pass(input_ids, attention_mask, inputs_embeds, backbone_inputs)[0]

    def _backbone_pass(self, input_ids, attention_mask, inputs_embeds, backbone_inputs: dict):
        """`backbone_features`, and the backbone's hidden states and attentions where the user asked for them."""
        outputs, attention_mask, passed_on = self._run_backbone(
            input_ids, attention_mask, inputs_embeds, backbone_inputs
        )
        features = {self.feature_name: self.head.extract(outputs, attention_mask)}
        if self.feature_is_per_token:
            features["attention_mask"] = attention_mask
        return features, passed_on

    def _features(self, input_ids, attention_mask, inputs_embeds, cached: dict, backbone_inputs: dict):
        """
        The head's input: the cached features when given (checked against the head), else a backbone pass; with the
        backbone's outputs the user asked for (none from cached features).
        """
        given = {name: value for name, value in cached.items() if value is not None}
        if not given:
            return self._backbone_pass(input_ids, attention_mask, inputs_embeds, backbone_inputs)
        if input_ids is not None or inputs_embeds is not None:
            raise ValueError(
                f"Got both token inputs and cached backbone features ({', '.join(given)}); pass one or the other."
            )
        if set(given) != {self.feature_name}:
            raise ValueError(
                f"`head_type`={self.config.head_type!r} reads the cached column `{self.feature_name}`, got "
                f"{', '.join(f'`{name}`' for name in given)}; rebuild the cache with `cache_backbone_features` for "
                "this model."
            )
        features = given[self.feature_name]
        expected = self.head.feature_shape(self.config.backbone_config)
        if features.dim() != len(expected) + 1 or any(
            size is not None and features.shape[i + 1] != size for i, size in enumerate(expected)
        ):
            shape = ", ".join("any" if size is None else str(size) for size in expected)
            raise ValueError(
                f"`{self.feature_name}` has shape {tuple(features.shape)}; this model's head expects (batch, {shape})."
            )
        features = {self.feature_name: features.to(self.dtype)}
        if self.feature_is_per_token:
            if attention_mask is None:
                attention_mask = torch.ones(features[self.feature_name].shape[:2], dtype=torch.long)
            features["attention_mask"] = attention_mask.to(features[self.feature_name].device)
        return features, {}

    def _logits(self, input_ids, attention_mask, inputs_embeds, cached: dict, backbone_inputs: dict):
        """The logits, and the backbone's hidden states and attentions where asked for (output fields)."""
        features, passed_on = self._features(input_ids, attention_mask, inputs_embeds, cached, backbone_inputs)
        represented = self.head(features[self.feature_name], features.get("attention_mask"))
        return self.classifier(self.dropout(represented)), passed_on


class HeadedModelForSequenceClassification(HeadedPreTrainedModel):
    task = SEQUENCE

    @can_return_tuple
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        backbone_hidden_states=None,
        backbone_last_token_states=None,
        backbone_layer_states=None,
        backbone_pooled_states=None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        r"""
        token_type_ids, position_ids and other keywords (`torch.Tensor`, *optional*):
            Passed to the backbone as they are (see the backbone's documentation).
        backbone_hidden_states, backbone_last_token_states, backbone_layer_states, backbone_pooled_states (*optional*):
            Cached backbone features (see `hf_heads.features.cache_backbone_features`) instead of `input_ids`: the
            column named by the head's `feature` (named here so that `Trainer` keeps them). A registered head with a
            column of its own receives it as a keyword too.
        labels (`torch.Tensor`, *optional*):
            Class ids, float targets or multi-label vectors: the loss follows `config.problem_type` as transformers'
            sequence classifiers do (inferred when None).
        """
        cached = {
            "backbone_hidden_states": backbone_hidden_states,
            "backbone_last_token_states": backbone_last_token_states,
            "backbone_layer_states": backbone_layer_states,
            "backbone_pooled_states": backbone_pooled_states,
        }
        if self.feature_name not in cached:
            cached[self.feature_name] = kwargs.pop(self.feature_name, None)
        backbone_inputs = dict(token_type_ids=token_type_ids, position_ids=position_ids, **kwargs)
        logits, passed_on = self._logits(input_ids, attention_mask, inputs_embeds, cached, backbone_inputs)
        loss = None if labels is None else classification_loss(logits, labels, self.config, self.config.num_labels)
        return SequenceClassifierOutput(loss=loss, logits=logits, **passed_on)


class HeadedModelForTokenClassification(HeadedPreTrainedModel):
    task = TOKEN

    @can_return_tuple
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        backbone_hidden_states=None,
        **kwargs,
    ) -> TokenClassifierOutput:
        r"""
        token_type_ids, position_ids and other keywords (`torch.Tensor`, *optional*):
            Passed to the backbone as they are (see the backbone's documentation).
        backbone_hidden_states (`torch.Tensor`, *optional*):
            Cached per-token backbone features (see `hf_heads.features.cache_backbone_features`), with
            `attention_mask`, instead of `input_ids`.
        labels (`torch.LongTensor`, *optional*):
            A class id per token; -100 marks tokens without a label.
        """
        cached = {"backbone_hidden_states": backbone_hidden_states}
        if self.feature_name not in cached:
            cached[self.feature_name] = kwargs.pop(self.feature_name, None)
        backbone_inputs = dict(token_type_ids=token_type_ids, position_ids=position_ids, **kwargs)
        logits, passed_on = self._logits(input_ids, attention_mask, inputs_embeds, cached, backbone_inputs)
        loss = None if labels is None else token_classification_loss(logits, labels, self.config.num_labels)
        return TokenClassifierOutput(loss=loss, logits=logits, **passed_on)


__all__ = ["HeadedModelForSequenceClassification", "HeadedModelForTokenClassification", "HeadedPreTrainedModel"]
