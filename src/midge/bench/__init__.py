"""``midge bench``: the load generator (issue 4), usable against any MQTT broker.

:mod:`~midge.bench.cli` (the command), :mod:`~midge.bench.runner` (the coordinator: processes,
schedule, /proc sampling, summary), :mod:`~midge.bench.worker` (one generator process),
:mod:`~midge.bench.wire` (pre-encoded PUBLISH, one-pass reader), :mod:`~midge.bench.scenario`
(what each scenario's clients do), :mod:`~midge.bench.procstat` (CPU and memory from /proc).
"""
