#!/bin/sh
# test image "wrongshape": see ../common/seg.py
exec python3 seg.py wrongshape
