"""The `creditq` command: one entry point for every process and operator task."""
