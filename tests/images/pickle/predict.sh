#!/bin/sh
# test image "pickle": see ../common/seg.py
exec python3 seg.py pickle
