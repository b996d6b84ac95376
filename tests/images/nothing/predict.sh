#!/bin/sh
# test image "nothing": see ../common/seg.py
exec python3 seg.py nothing
