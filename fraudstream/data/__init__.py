"""Where events come from: simulator, public data, the bank, producer, label store."""
