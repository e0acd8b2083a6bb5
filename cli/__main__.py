"""`python -m metaaugment.cli ...` is `metaaug ...` (what torchrun launches: `torchrun
--nproc-per-node N -m metaaugment.cli run ...`)."""
from metaaugment.cli.main import main

main()
