"""Every prompt and chat-template rendering lives here, and nowhere else."""

from __future__ import annotations

MATH_SYSTEM = (
    "You are a careful math tutor. Solve the problem step by step, "
    "then finish with the line 'The answer is N.' where N is the final number."
)


def question_messages(problem: str, system: str | None = MATH_SYSTEM) -> list[dict[str, str]]:
    """The chat a teacher (at generation) and a student (at evaluation) both see."""
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": problem.strip()}]


def completion_prompt(problem: str, system: str | None = MATH_SYSTEM) -> str:
    """Plain text for raw completion endpoints (`generate.api: completions`), which
    continue a prompt token-exactly and apply no chat template."""
    head = f"{system}\n\n" if system else ""
    return f"{head}Problem: {problem.strip()}\nSolution:"


def assistant_turn(reasoning: str, answer: str, think_open: str, think_close: str) -> str:
    """The trained assistant turn: reasoning inside think delimiters, then the answer.
    Empty delimiters train plain text (reasoning, blank line, answer)."""
    reasoning, answer = reasoning.strip(), answer.strip()
    if not think_open:
        return f"{reasoning}\n\n{answer}" if reasoning else answer
    return f"{think_open}\n{reasoning}\n{think_close}\n\n{answer}"


def render_chat(tokenizer, messages: list[dict[str, str]]) -> str:
    """The model's own chat template, ready for the assistant to speak."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # A base model with no template: plain role-prefixed turns.
    body = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages)
    return body + "Assistant:"


JUDGE_SYSTEM = (
    "You grade answers to problems. Read the problem and the proposed solution, decide "
    "whether its final answer is correct, and end with exactly one line: "
    "'VERDICT: CORRECT' or 'VERDICT: INCORRECT'."
)


def judge_messages(problem: str, response: str, reference: str | None = None):
    """The chat an LLM judge sees for one sample (used when no gold answer can check it)."""
    ref = f"\n\nReference answer (may be partial): {reference}" if reference else ""
    user = f"Problem:\n{problem.strip()}{ref}\n\nProposed solution:\n{response.strip()}"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


REFORMAT_SYSTEM = (
    "Rewrite the solution you are given into a clean, complete step-by-step solution of "
    "the same problem. Keep every step of its reasoning and its final answer; do not add "
    "new claims. Put the reasoning inside <think> and </think>, then one line: "
    "'The answer is X.'"
)


def reformat_messages(problem: str, reasoning: str, answer: str):
    """Sky-T1-style rewriting of a verified trace into one fixed template."""
    user = f"Problem:\n{problem.strip()}\n\nSolution:\n{reasoning.strip()}\n\n{answer.strip()}"
    return [{"role": "system", "content": REFORMAT_SYSTEM}, {"role": "user", "content": user}]
