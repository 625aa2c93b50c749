"""Synthetic support tickets with known labels: for the example job, tests, benchmarks."""

from __future__ import annotations

import random
from typing import Any

LABELS = ["billing", "technical", "shipping", "account"]

_TEMPLATES = {
    "billing": [
        "I was charged twice for my {item} this month, please refund the extra payment.",
        "My invoice for the {item} shows the wrong amount, can you correct the bill?",
        "Why did my credit card get billed again for the {item} subscription?",
        "I need a receipt for the payment I made for the {item}.",
    ],
    "technical": [
        "The {item} app crashes every time I open it on my phone.",
        "I get an error message when I try to sync my {item} with the server.",
        "The {item} keeps freezing after the latest software update.",
        "My {item} will not connect to the wifi network anymore.",
    ],
    "shipping": [
        "My {item} order has not arrived yet, where is my package?",
        "The tracking number for my {item} delivery does not work.",
        "The courier left the {item} parcel at the wrong address.",
        "When will my {item} be shipped? The delivery date keeps moving.",
    ],
    "account": [
        "I cannot log in to my account, the password reset email for the {item} never comes.",
        "Please change the email address on my {item} account.",
        "How do I delete my {item} profile and all my personal data?",
        "My account for the {item} was locked after too many sign-in attempts.",
    ],
}
_ITEMS = "headphones laptop camera printer router tablet watch speaker monitor keyboard".split()


def tickets(count: int, seed: int = 0, start_id: int = 0) -> list[dict[str, Any]]:
    """Rows {id, text, label}, deterministic for a seed."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = LABELS[rng.randrange(len(LABELS))]
        text = rng.choice(_TEMPLATES[label]).format(item=rng.choice(_ITEMS))
        rows.append({"id": f"t{start_id + i}", "text": text, "label": label})
    return rows
