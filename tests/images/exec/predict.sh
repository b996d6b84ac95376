#!/bin/sh
# test image "exec": the mode of ../common/seg.py follows the input's name (see the Dockerfile)
for f in /workspace/inputs/*; do
  case "$(basename "$f")" in
    *_SLEEP_*) exec python3 seg.py sleep ;;
    *_CRASH_*) exec python3 seg.py crash ;;
    *_NONE_*) exec python3 seg.py nothing ;;
  esac
done
exec python3 seg.py correct
