"""The sandbox: a local WhatsApp Business Platform for rehearsals, tests and benchmarks (docs/sandbox.md).

Start it with `wacamp sandbox serve`, or in-process with
`sandbox.server.running_sandbox(sandbox.config.SandboxConfig(...))`.
"""
