"""Several simultaneous streams each get their own complete, uncorrupted answer."""

from concurrent.futures import ThreadPoolExecutor

import openai

PROMPTS = ["hello", "how do i boil an egg?", "explain why", "a list of steps", "python code", "the lazy dog"]


def _stream(base: str, prompt: str, max_tokens: int) -> tuple[str, str]:
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(model="base", messages=[{"role": "user", "content": prompt}],
                                            max_tokens=max_tokens, temperature=0, stream=True)
    text, finish = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


def test_concurrent_streams_equal_their_solo_answers(service):
    lengths = [40, 25, 60, 10, 50, 30]  # different lengths: rows leave the batch at different steps
    solo = [_stream(service, p, n) for p, n in zip(PROMPTS, lengths)]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(lambda pn: _stream(service, *pn), zip(PROMPTS, lengths)))
    assert together == solo
    assert all(finish in ("stop", "length") for _, finish in together)
