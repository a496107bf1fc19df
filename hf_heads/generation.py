"""What a causal LM was choosing between: each generated token's probability and its top-k alternatives."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenChoice:
    token_id: int
    token: str
    probability: float


@dataclass(frozen=True)
class GenerationExplanation:
    """
    `chosen[t]` is the token generated at step t; `alternatives[t]` the `top_k` most probable tokens at that step,
    most probable first. Probabilities are the model's at the given temperature: a softmax of its logits divided by
    `temperature`, before any filtering `generate` applies when sampling (top-k/top-p would renormalise them and
    hide how sure the model was).
    """

    prompt: str
    text: str
    chosen: list[TokenChoice]
    alternatives: list[list[TokenChoice]]

    def table(self, cell_width: int = 14) -> str:
        """Rows are ranks, columns generated positions; a `*` marks the generated token."""

        def cell(choice: TokenChoice, mark: str = "") -> str:
            # Whitespace tokens must stay visible in a table: a space shows as "␣", control characters escaped.
            token = repr(choice.token)[1:-1].replace(" ", "␣")
            text = f"{mark}{token} {choice.probability:.2f}"
            return text[:cell_width].ljust(cell_width)

        positions = range(len(self.chosen))
        lines = ["rank  " + "".join(f"pos {t}".ljust(cell_width) for t in positions)]
        ranks = max((len(options) for options in self.alternatives), default=0)
        for rank in range(ranks):
            row = []
            for t in positions:
                options = self.alternatives[t]
                if rank >= len(options):
                    row.append(" " * cell_width)
                    continue
                mark = "*" if options[rank].token_id == self.chosen[t].token_id else ""
                row.append(cell(options[rank], mark))
            lines.append(f"{rank + 1:<6}" + "".join(row))
        return "\n".join(line.rstrip() for line in lines)

    def __str__(self) -> str:
        return f"{self.prompt}|{self.text}\n{self.table()}"


@torch.no_grad()
def explain(
    model,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 20,
    top_k: int = 6,
    temperature: float = 1.0,
    do_sample: bool = False,
    **generate_kwargs,
) -> GenerationExplanation:
    """
    Generates from `prompt` with `model.generate(output_logits=True)` and returns, for every generated token, its
    probability and the `top_k` alternatives with theirs. `temperature` and `do_sample` are `generate`'s; other
    `generate` arguments pass through. `print(explain(...))` shows the text and the table.
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"`max_new_tokens` must be a positive integer, got {max_new_tokens!r}.")
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive integer, got {top_k!r}.")
    if not temperature > 0:
        raise ValueError(f"`temperature` must be positive, got {temperature!r}.")
    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    if do_sample:
        generate_kwargs.setdefault("temperature", temperature)
    output = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        **generate_kwargs,
    )
    generated = output.sequences[0, inputs["input_ids"].shape[1] :].tolist()

    def choice(token_id: int, probability: float) -> TokenChoice:
        return TokenChoice(token_id, tokenizer.decode([token_id]), probability)

    chosen, alternatives = [], []
    for token_id, logits in zip(generated, output.logits):
        probabilities = torch.softmax(logits[0].float() / temperature, dim=-1)
        chosen.append(choice(token_id, probabilities[token_id].item()))
        values, indices = probabilities.topk(min(top_k, probabilities.shape[-1]))
        alternatives.append([choice(i, p) for i, p in zip(indices.tolist(), values.tolist())])
    return GenerationExplanation(prompt, tokenizer.decode(generated), chosen, alternatives)


__all__ = ["GenerationExplanation", "TokenChoice", "explain"]
