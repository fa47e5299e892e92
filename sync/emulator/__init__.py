"""A local emulator of the Loops (loops.so) API v1, for demos, tests, benchmarks and dry runs.

`running_emulator()` runs one in a background thread; `serve()` (and `loops-sync emulator`) in
the foreground; `create_app()` gives the bare Starlette app.
"""

from sync.emulator.app import DEV_API_KEY, EmulatorOptions, create_app
from sync.emulator.server import EmulatorHandle, running_emulator, serve

__all__ = [
    "DEV_API_KEY",
    "EmulatorHandle",
    "EmulatorOptions",
    "create_app",
    "running_emulator",
    "serve",
]
