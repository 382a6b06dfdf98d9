"""What describes items: stream statistics and context features, text vectors, catalogue feature rows."""
