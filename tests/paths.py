"""Where the tests find the project's files: the repository root and the prepared models."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
