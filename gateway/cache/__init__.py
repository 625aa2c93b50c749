"""Two-tier (exact + semantic) response cache of the gateway, kept in Redis."""
