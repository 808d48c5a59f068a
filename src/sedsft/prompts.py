"""The paper's prompt: the model's own chat template with one system prompt, no few-shot examples."""

from __future__ import annotations

from sedsft.errors import UserError

# The system prompt used for SFT data, RL prompts and evaluation in the paper (Qwen2.5-Math style).
DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def build_messages(question: str, *, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> list[dict]:
    """Chat messages for one question: an optional system turn, then the user turn."""
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": question})
    return messages


def render_prompt(tokenizer, question: str, *, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> str:
    """The generation prompt text: the tokenizer's chat template with the assistant turn opened."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise UserError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
            "use an instruct/chat model's tokenizer or set tokenizer.chat_template"
        )
    messages = build_messages(question, system_prompt=system_prompt)
    return apply_template(tokenizer, messages)


def apply_template(tokenizer, messages: list[dict]) -> str:
    """The generation prompt of ``messages``; a template that refuses them (a Jinja error) is a UserError."""
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except TemplateError as e:
        system = " (a system turn? pass --system_prompt none)" if messages[0]["role"] == "system" else ""
        raise UserError(f"the tokenizer's chat template refuses a prompt: {e}{system}") from None
