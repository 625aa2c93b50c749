"""Wire schemas shared by the gateway and the deployments (OpenAI HTTP API shapes)."""
