#!/bin/sh
# test image "outflood": see ../common/seg.py
exec python3 seg.py outflood
