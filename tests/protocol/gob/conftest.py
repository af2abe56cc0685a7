from .oracle import oracle  # noqa: F401  (the session-scoped Go oracle fixture)
