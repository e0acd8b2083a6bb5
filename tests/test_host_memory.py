"""keep_freed_host_memory: freed activations are reused instead of page-faulted in again."""
import subprocess
import sys

import pytest

FAULTS_PER_CYCLE = 8 * 16 * 1024 * 1024 // 4096  # 8 blocks of 16 MiB in 4 KiB pages

# In a fresh process: the allocator's behaviour depends on the whole history of the process's
# heap, which the rest of the test suite would otherwise have shaped.
CYCLES = """
import resource, sys, torch
from metaaugment.run.host_memory import keep_freed_host_memory
if not keep_freed_host_memory():
    print("unavailable"); sys.exit()

def training_step_like_cycle():
    blocks = [torch.ones(4 * 1024 * 1024) for _ in range(8)]  # touched, like activations
    del blocks

# the heap reaches its steady size within two cycles (the first one or two grow it)
training_step_like_cycle()
training_step_like_cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    training_step_like_cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_freed_blocks_are_reused_without_page_faults():
    out = subprocess.run([sys.executable, "-c", CYCLES], capture_output=True, text=True, check=True).stdout.strip()
    if out == "unavailable":
        pytest.skip("glibc's mallopt is not available on this platform")
    # glibc's defaults hand the 128 MiB back to the OS after each cycle: ~32k faults per
    # cycle; kept memory is reused (0 faults once the heap has grown)
    assert int(out) < FAULTS_PER_CYCLE / 2
