"""Routing beyond one broker process: the :class:`~midge.cluster.router.Router` seam, and the
multi-process implementation behind ``midge broker --workers N`` (:mod:`midge.cluster.workers`)."""
