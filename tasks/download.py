"""`--download`: a benchmark's data fetched into --data-root, for the benchmarks that have a
public download (torchvision's URLs, checksums and extraction; `Benchmark.download`)."""
from __future__ import annotations

from pathlib import Path

from metaaugment.infra.errors import UserError
from metaaugment.registry import create_benchmark


def download_benchmark(name: str, data_root: Path | str) -> list[str]:
    """Fetch benchmark `name`'s data into `data_root`; returns the entries fetched ([] when
    they were all there). A UserError line for a benchmark without a public download (saying
    what to do instead), one that needs no data, or a download that fails (nothing kept)."""
    bench = create_benchmark(name)
    if bench.download is None:
        instead = bench.download_instead or f"{name} is embedded in the package: it needs no data"
        raise UserError(f"--download does not apply to {name}: {instead}")
    return bench.download(Path(data_root))
