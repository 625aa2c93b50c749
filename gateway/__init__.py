"""The ingress deployment: OpenAI-compatible HTTP API in front of the model deployments."""
