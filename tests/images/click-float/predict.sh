#!/bin/sh
# test image "click-float": see ../interactive/click.py
exec python3 click.py float
