"""`prediction: {type: "content", content}` -> the predicted tokens the engine drafts from, or a
400 for what it cannot be combined with (as OpenAI refuses the same combinations)."""

from __future__ import annotations

from rill.api.protocols.chat.schemas import ChatCompletionRequest
from rill.errors import InvalidRequest


def predicted_text(body: ChatCompletionRequest) -> str | None:
    """The prediction's text (text parts concatenated); None without a prediction."""
    prediction = body.prediction
    if prediction is None:
        return None
    if isinstance(prediction.content, str):
        return prediction.content
    texts = []
    for i, part in enumerate(prediction.content):
        if part.type != "text" or part.text is None:
            raise InvalidRequest(f"`prediction.content[{i}]`: a prediction holds text parts only "
                                 f"(got type {part.type!r}).", param=f"prediction.content[{i}]")
        texts.append(part.text)
    return "".join(texts)


def check_prediction(body: ChatCompletionRequest) -> None:
    """A prediction drafts one free-text answer: not n of them, nor grammar-constrained output."""
    if body.prediction is None:
        return
    if (body.n or 1) > 1:
        raise InvalidRequest("`prediction` cannot be combined with `n` greater than 1.", param="prediction")
    for field in ("tools", "functions"):
        if getattr(body, field) is not None:
            raise InvalidRequest(f"`prediction` cannot be combined with `{field}`.", param="prediction")
    if body.response_format is not None and body.response_format.type != "text":
        raise InvalidRequest(f"`prediction` cannot be combined with `response_format` "
                             f"`{body.response_format.type}`.", param="prediction")

