"""Run one command and record its wall time and peak memory: a small process in between.

    python -m benchmarks.launch RESULT.json -- COMMAND [ARGS...]

Why a launcher: Linux charges a child's peak resident memory (``ru_maxrss``) with the peak of the
process it was forked from when that shared its memory until ``exec`` (``vfork``, which
``subprocess`` uses), so a child spawned straight from the benchmark process would report the
benchmark's own hundreds of megabytes. Spawned from this small process, the child's peak is
its own. The wall time is measured here too, from just before the spawn to the exit, so the
launcher's own start-up is not counted.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    result_path, command = sys.argv[1], sys.argv[3:]
    t0 = time.perf_counter()
    pid = os.posix_spawnp(command[0], command, os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    max_rss_kb = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss / 1024
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump({"wall": wall, "max_rss_kb": max_rss_kb, "returncode": os.waitstatus_to_exitcode(status)}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
