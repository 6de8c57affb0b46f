"""Examples of using the gateway (run from the repository root)."""
