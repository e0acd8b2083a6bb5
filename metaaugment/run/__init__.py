"""One run: its configuration and settings, the run loop, checkpoints, the run folder, its
metrics' sinks and progress.

Import the modules themselves (`metaaugment.run.loop`, ...). This package is the top of the
library: nothing below it imports it (tests/test_layers.py); many runs (comparisons, their
launchers, jobs and sweep files) live beside it in `metaaugment.comparison`.
"""
