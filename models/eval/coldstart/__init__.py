"""The cold-start evaluation (MeLU protocol): split, methods, metrics, reports."""
