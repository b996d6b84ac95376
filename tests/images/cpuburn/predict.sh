#!/bin/sh
# test image "cpuburn": see ../common/seg.py
exec python3 seg.py cpuburn
