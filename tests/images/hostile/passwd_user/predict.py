"""Not hostile: the image declares a named non-root user (USER app, uid 1234 gid 1235 in its
/etc/passwd). It keeps that user, passed to the engine as the numbers 1234:1235."""
import os

import hostile

hostile.probe("uid", os.getuid())
hostile.probe("gid", os.getgid())
hostile.write_correct_outputs()
