"""Sending: the ledger as a queue, the dispatch loop, rate limiter, pacing, tier budget and writer."""
