"""The ground floor: settings, tables, database access, exceptions, exit codes, the clock and shipped files.

Nothing here imports any other part of wacamp.
"""
