#!/bin/sh
# test image "memory": see ../common/seg.py
exec python3 seg.py memory
