#!/bin/sh
# test image "sleep": see ../common/seg.py
exec python3 seg.py sleep
