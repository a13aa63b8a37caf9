"""Runs: what is due (run-due), the long-lived worker, scale-out across processes, the reaper, metrics."""
