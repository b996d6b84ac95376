#!/bin/sh
# test image "click-ignore": see ../interactive/click.py
exec python3 click.py ignore
