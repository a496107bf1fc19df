from .._shared_files import share_linked_files


share_linked_files(__name__)

from .configuration_gaam_gpt2 import GaamGPT2Config  # noqa: E402
from .modeling_gaam_gpt2 import (  # noqa: E402
    GaamGPT2ForQuestionAnswering,
    GaamGPT2ForSequenceClassification,
    GaamGPT2ForTokenClassification,
    GaamGPT2LMHeadModel,
    GaamGPT2Model,
    GaamGPT2PreTrainedModel,
)
