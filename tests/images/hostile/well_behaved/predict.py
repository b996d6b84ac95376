"""The control: a correct box-fill prediction (expected: ok)."""
import hostile

hostile.write_correct_outputs()
