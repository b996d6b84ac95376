#!/bin/sh
# Called by SegArena (and the CVPR 2024 scripts) as: sh predict.sh
exec python3 /workspace/predict.py
