"""The one chat format shared by training and serving.

LIMA (section 3) ends every utterance, user and assistant, with a new end-of-turn token (EOT)
instead of the pretrained EOS, whose meaning the base model already fixed. Training adds the
token to the tokenizer, stores this template in the checkpoint (``chat_template.jinja``) and
the service, vLLM included, renders prompts with that stored template, so both sides produce
the same text by construction.

    User:
    How do I boil an egg?<|eot|>
    Assistant:
    Put it in boiling water ...<|eot|>

``{% generation %}`` marks what the assistant says (its EOT included) for TRL's
assistant-only loss; it renders to nothing.
"""

from __future__ import annotations

EOT = "<|eot|>"

def chat_template(bos: str = "", eot: str = EOT) -> str:
    """The Jinja chat template; ``bos`` is prepended for bases whose tokenizer expects one."""
    return (
        "{{- " + repr(bos) + " -}}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'assistant' -%}"
        "{{- 'Assistant:\\n' -}}"
        "{%- generation -%}{{- message['content'] + " + repr(eot) + " -}}{%- endgeneration -%}"
        "{{- '\\n' -}}"
        "{%- else -%}"
        "{{- (message['role'] | capitalize) + ':\\n' + message['content'] + " + repr(eot) + " + '\\n' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- 'Assistant:\\n' -}}{%- endif -%}"
    )


def stop_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a turn: the generation config's EOS list (TRL puts the EOT first), the
    tokenizer's EOS and the LIMA EOT token when the vocabulary has it."""
    ids: set[int] = set()
    for source in (model.generation_config.eos_token_id, model.config.eos_token_id, tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(source)
    eot = tokenizer.convert_tokens_to_ids(EOT)
    if isinstance(eot, int) and eot != tokenizer.unk_token_id:
        ids.add(eot)
    return ids
