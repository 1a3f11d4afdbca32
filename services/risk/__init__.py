"""Risk control: allow / review / deny decisions from Redis counters, lists and rules."""
