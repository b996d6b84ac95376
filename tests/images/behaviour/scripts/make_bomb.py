"""Build time: an npz whose segs.npy claims (32768, 32768) uint8 and inflates to 1 GiB of zeros."""
import sys
import zipfile

import numpy as np

GIB = 1024**3
header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1), np.uint8))
header["shape"] = (32768, 32768)
with zipfile.ZipFile(sys.argv[1], "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
    with zf.open("segs.npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        block = bytes(16 * 1024 * 1024)
        for _ in range(GIB // len(block)):
            fh.write(block)
