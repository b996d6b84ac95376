#!/bin/sh
# test image "crash": see ../common/seg.py
exec python3 seg.py crash
