"""hf-heads: Gaussian Adaptive Attention and task heads for GPT-2-style models, as ordinary Hugging Face models.

Importing the package registers every configuration and model class with the Auto classes.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)
from transformers.models.auto.tokenization_auto import REGISTERED_TOKENIZER_CLASSES

from .features import CachedFeaturesCollator, cache_backbone_features
from .gaam import GaussianAdaptiveAttention, ImportanceFactors, from_reference, importance_factors, plot_importance
from .generation import explain
from .lora import lora_config_for
from .models.gaam_gpt2 import (
    GaamGPT2Config,
    GaamGPT2ForQuestionAnswering,
    GaamGPT2ForSequenceClassification,
    GaamGPT2ForTokenClassification,
    GaamGPT2LMHeadModel,
    GaamGPT2Model,
)
from .models.headed import (
    Head,
    HeadedConfig,
    HeadedModelForSequenceClassification,
    HeadedModelForTokenClassification,
    register_head,
)
from .tokenization import CharTokenizer


__version__ = "0.1.0"


def _register() -> None:
    AutoConfig.register(GaamGPT2Config.model_type, GaamGPT2Config, exist_ok=True)
    for auto_class, model_class in (
        (AutoModel, GaamGPT2Model),
        (AutoModelForCausalLM, GaamGPT2LMHeadModel),
        (AutoModelForSequenceClassification, GaamGPT2ForSequenceClassification),
        (AutoModelForTokenClassification, GaamGPT2ForTokenClassification),
        (AutoModelForQuestionAnswering, GaamGPT2ForQuestionAnswering),
    ):
        auto_class.register(GaamGPT2Config, model_class, exist_ok=True)
        # `save_pretrained` then writes `auto_map` and copies the modelling files for `trust_remote_code=True`.
        model_class.register_for_auto_class(auto_class.__name__)
    GaamGPT2Config.register_for_auto_class()
    AutoConfig.register(HeadedConfig.model_type, HeadedConfig, exist_ok=True)
    for auto_class, model_class in (
        (AutoModelForSequenceClassification, HeadedModelForSequenceClassification),
        (AutoModelForTokenClassification, HeadedModelForTokenClassification),
    ):
        auto_class.register(HeadedConfig, model_class, exist_ok=True)
        model_class.register_for_auto_class(auto_class.__name__)
    HeadedConfig.register_for_auto_class()
    # `AutoTokenizer.register` ties a tokenizer to one config class, but a character tokenizer serves any model, so
    # the class is registered by name: `AutoTokenizer` resolves a folder's `"tokenizer_class": "CharTokenizer"`.
    REGISTERED_TOKENIZER_CLASSES[CharTokenizer.__name__] = CharTokenizer
    CharTokenizer.register_for_auto_class("AutoTokenizer")


_register()

__all__ = [
    "CachedFeaturesCollator",
    "CharTokenizer",
    "GaamGPT2Config",
    "GaamGPT2ForQuestionAnswering",
    "GaamGPT2ForSequenceClassification",
    "GaamGPT2ForTokenClassification",
    "GaamGPT2LMHeadModel",
    "GaamGPT2Model",
    "GaussianAdaptiveAttention",
    "Head",
    "HeadedConfig",
    "HeadedModelForSequenceClassification",
    "HeadedModelForTokenClassification",
    "ImportanceFactors",
    "cache_backbone_features",
    "explain",
    "from_reference",
    "importance_factors",
    "lora_config_for",
    "plot_importance",
    "register_head",
]
