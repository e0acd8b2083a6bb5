"""What this machine has, read without importing torch (the CLI checks settings before it)."""
from __future__ import annotations

import os


def machine_memory_bytes() -> int | None:
    """The machine's physical memory, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
