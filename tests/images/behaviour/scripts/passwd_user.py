"""Not hostile: the image declares a named non-root user (USER app, uid 1234 gid 1235 in its
/etc/passwd). It keeps that user, passed to the engine as the numbers 1234:1235."""
import os

import common

common.probe("uid", os.getuid())
common.probe("gid", os.getgid())
common.write_correct_outputs()
