"""Contracts shared by every side of a run: config, batches, queue, run directories, Ray, metrics.

Nothing here imports TensorFlow or Dash, so producers and the dashboard start fast.
"""
