"""Lists /proc looking for other containers' or the host's processes (expected: ok, only its own)."""
import os

import common

pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
names = []
for pid in pids:
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        cmd = "?"
    names.append(os.path.basename(cmd) or "?")
common.probe("proc_pids", len(pids))
common.probe("proc_cmds", ",".join(names))
common.write_correct_outputs()
