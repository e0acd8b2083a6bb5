"""The bottom layer: user errors, plain-data files and their schema, the trust boundary, optional
dependencies, and the keyword options of factories."""
