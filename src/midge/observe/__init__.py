"""Seeing what the broker does: the ``protocol http`` listener (:mod:`midge.observe.http`) with
Prometheus ``/metrics`` (:mod:`midge.observe.metrics`) and the admin API
(:mod:`midge.observe.openapi`), and ``midge ctl`` (:mod:`midge.observe.ctl`). docs/operations.md.
"""
