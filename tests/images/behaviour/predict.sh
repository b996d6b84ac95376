#!/bin/sh
# SegArena test image: runs the behaviour chosen at build time ($BEHAVIOUR; tests/behaviours.py), after an optional
# delay ($DELAY_S, the scale-out tests' per-case work).
[ "${DELAY_S:-0}" = 0 ] || sleep "$DELAY_S"
S=/opt/segarena-test
case "$BEHAVIOUR" in
  noop) exit 0 ;;  # nothing at all, not even python (bench/sandbox.py's overhead reference)
  click-*) exec python3 -u "$S/click.py" "${BEHAVIOUR#click-}" ;;  # interactive models
  exec)  # the execution-host tests: the behaviour follows the input's name
    for f in /workspace/inputs/*; do
      case "$(basename "$f")" in
        *_SLEEP_*) exec python3 -u "$S/sleep_forever.py" ;;
        *_CRASH_*) exec python3 -u "$S/crash.py" ;;
        *_NONE_*) exec python3 -u "$S/exit0_no_output.py" ;;
      esac
    done
    exec python3 -u "$S/correct.py" ;;
esac
exec python3 -u "$S/$BEHAVIOUR.py"
