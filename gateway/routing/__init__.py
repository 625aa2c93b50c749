"""Model routing: the `auto` tier policy, fallback chains, circuit breakers, deadlines."""
