from .._shared_files import SHARED_FILES, share_files


# A headed folder carries GAAM-GPT2's code too (a GAAM-GPT2 backbone then loads without the package).
share_files(__name__, names=tuple(SHARED_FILES))

from .configuration_headed import HeadedConfig  # noqa: E402
from .heads import Head, register_head  # noqa: E402
from .modeling_headed import (  # noqa: E402
    HeadedModelForSequenceClassification,
    HeadedModelForTokenClassification,
    HeadedPreTrainedModel,
)
