"""``python -m conveyor_bench``: the same as ``conveyor bench``."""

from .cli import bench

bench(prog_name="conveyor bench")
