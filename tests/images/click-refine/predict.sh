#!/bin/sh
# test image "click-refine": see ../interactive/click.py
exec python3 click.py refine
