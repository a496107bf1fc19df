from .._shared_files import share_linked_files


share_linked_files(__name__)

from .configuration_headed import HeadedConfig  # noqa: E402
from .modeling_headed import (  # noqa: E402
    HeadedModelForSequenceClassification,
    HeadedModelForTokenClassification,
    HeadedPreTrainedModel,
)
