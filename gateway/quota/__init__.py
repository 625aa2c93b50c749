"""Per-tenant token-bucket quotas kept in Redis: pure bucket core, Redis store, policy."""
