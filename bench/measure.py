"""Run a command and print its wall time and peak RSS as JSON (a wrapper per measurement, so
each peak is that command's own: RUSAGE_CHILDREN keeps the largest child seen)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

started = time.perf_counter()
result = subprocess.run(sys.argv[1:], capture_output=True, text=True, check=False)
wall = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(
    json.dumps(
        {
            "wall_seconds": wall,
            "peak_rss_mb": usage.ru_maxrss / 1024,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "returncode": result.returncode,
            "stdout": result.stdout[-2000:],
            "stderr": result.stderr[-2000:],
        }
    )
)
