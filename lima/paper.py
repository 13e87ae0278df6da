"""The LIMA paper's choices that every layer uses (Zhou et al. 2023), each number in this one place.

The training recipe's numbers (epochs, learning rate, batch, residual dropout, checkpoint window)
live in the base recipe, ``training/presets/base.yaml``; the end-of-turn token and the chat
template in ``lima.chat_format``.
"""

from __future__ import annotations

# Section 4.1: nucleus sampling p = 0.9, temperature 0.7, repetition penalty 1.2, at most 2,048
# new tokens. Every request and every generation in this product starts from these.
DECODING = {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.2, "max_tokens": 2048}

# Section 4.3: the three-level rating of each response.
LABELS = ("Fail", "Pass", "Excellent")
DEFINITIONS = {
    "Fail": "the response did not meet the requirements of the prompt",
    "Pass": "the response met the requirements of the prompt",
    "Excellent": "the model provided an excellent response to the prompt",
}

# Section 6: the two variants, and the names their trained models are served under.
VARIANTS = ("zero-shot", "dialogue")
MODEL_NAMES = {"zero-shot": "lima-zero-shot", "dialogue": "lima-dialogue"}
ZERO_SHOT, DIALOGUE = MODEL_NAMES["zero-shot"], MODEL_NAMES["dialogue"]

# Section 6, its results (10 conversations per model). Pass is derived: turns - Excellent - Fail.
SECTION_6 = {
    ZERO_SHOT: {"label": "paper, zero-shot (1,000)", "turns": 42, "Excellent": 19, "Pass": 8, "Fail": 15,
                "conversations": 10, "note": "fails in 6 of 10 conversations within 3 turns"},
    DIALOGUE: {"label": "paper, dialogue (1,030)", "turns": 46, "Excellent": 35, "Pass": 10, "Fail": 1,
               "conversations": 10, "note": ""},
}
SECTION_6_VERDICT = "dialogue better in 7 of 10 conversations, tied in 3"


def model_name(variant: str, stage: str = "sft") -> str:
    """The served name of a variant's model: ``lima-dialogue``, or ``lima-dialogue-kto`` after a
    preference stage on top of it."""
    return MODEL_NAMES[variant] if stage == "sft" else f"{MODEL_NAMES[variant]}-{stage}"
