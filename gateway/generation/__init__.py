"""Chat completions and completions: plan, admit, look up, run, settle (see service.py)."""
