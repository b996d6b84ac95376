#!/bin/sh
# test image "network": see ../common/seg.py
exec python3 seg.py network
