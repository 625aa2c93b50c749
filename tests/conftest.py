import os

# Ray 2.60 enables token auth by default; local test clusters run without it.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
