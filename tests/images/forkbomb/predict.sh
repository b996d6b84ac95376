#!/bin/sh
# test image "forkbomb": see ../common/seg.py
exec python3 seg.py forkbomb
