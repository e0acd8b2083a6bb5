"""Many runs: comparisons (plan, train or reuse, tables and figures), their launchers and jobs, and
sweep files. Import the modules themselves (`metaaugment.comparison.compare`, ...)."""
