#!/bin/sh
# test image "click-silent3": see ../interactive/click.py
exec python3 click.py silent3
