"""Runs a setuid-root copy of id(1) and tries setuid(0) (expected: ok, euid stays non-root,
no effective capabilities)."""
import os
import subprocess

import common

common.probe("uid", os.getuid())
out = subprocess.run(["/workspace/suid-id", "-u"], check=False, capture_output=True, text=True)
common.probe("suid_euid", out.stdout.strip() or out.stderr.strip())
common.probe("setuid0", common.errno_of(lambda: os.setuid(0)))
cap_eff = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
common.probe("cap_eff", cap_eff)
no_new_privs = [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs")]
common.probe("no_new_privs", no_new_privs[0] if no_new_privs else "unknown")
common.write_correct_outputs()
