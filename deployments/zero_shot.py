"""Zero-shot classification with the LLM: one label of a fixed set per text.

The labels are shown as lettered options and the answer is one token constrained to
those letters (vLLM's `allowed_token_ids`), so the model cannot answer outside the set
and nothing is parsed from free text. The label's probability is read from the engine's
log-probabilities after the constraint (`logprobs_mode: processed_logprobs`), i.e. over
the letters only. Offline engine (vLLM's `LLM`): the batch jobs' wrapper; it batches a
whole list of prompts in one `generate`. Every prompt starts with the same instructions,
so vLLM's prefix cache computes them once, given KV blocks small enough to fill (the job
configs set `block_size: 32`; the CPU build's default of 128 never fills).
"""

from __future__ import annotations

import math
import string
from typing import Any

MAX_LABELS = len(string.ascii_uppercase)


class ZeroShotClassifier:
    def __init__(
        self, model: str, labels: list[str], instructions: str, engine_kwargs: dict[str, Any]
    ):
        from vllm import LLM, SamplingParams

        if len(labels) > MAX_LABELS:
            raise ValueError(f"zero-shot classification takes at most {MAX_LABELS} labels")
        kwargs = {"logprobs_mode": "processed_logprobs", **engine_kwargs}
        self._llm = LLM(model=model, **kwargs)
        self._tokenizer = self._llm.get_tokenizer()
        self._labels = labels
        letters = string.ascii_uppercase[: len(labels)]
        self._token_ids = [self._single_token(letter) for letter in letters]
        options = "\n".join(
            f"{letter}. {label}" for letter, label in zip(letters, labels, strict=True)
        )
        self._system = (
            f"{instructions}\nCategories:\n{options}\nAnswer with the letter of the category only."
        )
        self._params = SamplingParams(
            max_tokens=1, temperature=0.0, allowed_token_ids=self._token_ids, logprobs=len(labels)
        )

    def _single_token(self, letter: str) -> int:
        ids = self._tokenizer.encode(letter, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"option letter {letter!r} is not one token for this tokenizer")
        return int(ids[0])

    def prompt(self, text: str) -> str:
        messages: list[Any] = [
            {"role": "system", "content": self._system},
            {"role": "user", "content": text},
        ]
        rendered = self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return str(rendered)

    def classify(self, texts: list[str]) -> list[tuple[str, float]]:
        """(label, probability) per text, in order."""
        outputs = self._llm.generate([self.prompt(t) for t in texts], self._params, use_tqdm=False)
        results = []
        for output in outputs:
            logprobs = (output.outputs[0].logprobs or [{}])[0]
            scores = [logprobs[t].logprob if t in logprobs else -math.inf for t in self._token_ids]
            best = max(range(len(scores)), key=scores.__getitem__)
            results.append((self._labels[best], math.exp(scores[best])))
        return results
