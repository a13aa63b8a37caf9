"""Message templates: their shape and placeholders, the local catalogue, and syncing it with the platform."""
