"""The chaos drill: a mixed load on a real raygate while its parts fail, one fault a phase.

    .venv/bin/python -m loadtests.chaos [--phases redis_kill,redis_slow,engine_kill,
        gateway_kill,disconnects] [--duration-s 40] [--out loadtests/results/chaos.md]

`load` is the client side, `faults` what goes wrong, `drill` runs a phase and measures it,
`report` turns attempts into figures and the table, `cluster` starts the drill's raygate.
"""
