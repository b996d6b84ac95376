#!/bin/sh
# test image "correct": see ../common/seg.py
exec python3 seg.py correct
