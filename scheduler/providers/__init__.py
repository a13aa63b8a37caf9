"""Clients of the two WhatsApp APIs the engine can send through."""
