#!/bin/sh
# test image "noop": exits at once (bench/sandbox.py overhead reference)
true
