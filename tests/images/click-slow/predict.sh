#!/bin/sh
# test image "click-slow": see ../interactive/click.py
exec python3 click.py slow
