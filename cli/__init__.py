"""The `metaaug` command line (installed as metaaugment.cli)."""
