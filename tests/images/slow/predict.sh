#!/bin/sh
# test image "slow": see ../common/seg.py
exec python3 seg.py slow
