"""A correct box-fill prediction (expected: ok). It first reports how it runs: its uid, whether the root file system
and inputs/ are writable, $HOME and the input files it sees (the sandbox tests assert on that line)."""
import os

import common


def writable(path):
    try:
        open(path, "w").close()
        return "rw"
    except OSError:
        return "ro"


files = sorted(os.listdir(common.INPUTS))
print(f"uid={os.getuid()} rootfs={writable('/workspace/probe')} inputs={writable(common.INPUTS + '/probe')} "
      f"home={os.environ.get('HOME')} files={files}", flush=True)
common.write_correct_outputs()
