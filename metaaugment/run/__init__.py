"""Running experiments: run configuration, the run loop, checkpoints, run folders, comparisons.

Import the modules themselves (`metaaugment.run.loop`, ...); this package imports nothing,
so that library modules may use its leaf modules without import cycles.
"""
