#!/bin/sh
# test image "stdout": see ../common/seg.py
exec python3 seg.py stdout
