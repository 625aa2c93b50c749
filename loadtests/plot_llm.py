"""Plot loadtests/results/llm_streaming.json: throughput and TTFT p50 per system.

.venv/bin/python -m loadtests.plot_llm   ->  loadtests/results/llm_streaming.png
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from loadtests.harness import RESULTS


def main() -> int:
    record = json.loads((RESULTS / "llm_streaming.json").read_text())
    systems: dict[str, list[dict]] = record["systems"]
    levels = [r["concurrency"] for r in next(iter(systems.values()))]
    width = 0.8 / len(systems)
    fig, (tput, ttft) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, runs) in enumerate(systems.items()):
        xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(levels))]
        tput.bar(xs, [r["output_tok_s"] for r in runs], width, label=name)
        ttft.bar(xs, [r["ttft_p50_ms"] for r in runs], width, label=name)
    for ax, title in (
        (tput, "output tokens/s (higher is better)"),
        (ttft, "TTFT p50 ms (lower is better)"),
    ):
        ax.set_xticks(range(len(levels)), [f"c={c}" for c in levels])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    tput.legend()
    machine = record["machine"]
    fig.suptitle(
        f"Streaming chat, {record['model']}, {record['max_tokens']} tokens; "
        f"{machine['cores']}-core {machine['cpu']}"
    )
    fig.tight_layout()
    out = RESULTS / "llm_streaming.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
