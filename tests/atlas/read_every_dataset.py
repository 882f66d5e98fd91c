#!/usr/bin/env python3
"""Reads every dataset of an atlas with h5py (the checksums are verified by HDF5 on each read) and
checks that each non-scalar one is chunked with Fletcher-32. Prints the dataset count and two
values the C++ side compares with its own reader.

usage: read_every_dataset.py ATLAS
"""
import sys

import h5py
import numpy as np

VLEN = {"/model/config_json", "/calibration/domains/name", "/calibration/domains/source",
        "/calibration/domains/format"}


def main():
    path = sys.argv[1]
    names = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: names.append("/" + name) if isinstance(obj, h5py.Dataset) else None)
        for name in names:
            d = f[name]
            values = d[()]  # raises OSError when a checksum fails
            vlen = h5py.check_string_dtype(d.dtype) is not None and h5py.check_string_dtype(d.dtype).length is None
            if vlen:  # variable-length strings cannot carry the filter (docs/atlas-format.md, "Integrity")
                if name not in VLEN:
                    sys.exit(f"{path}: {name}: unexpected variable-length string dataset")
            elif not d.fletcher32 or d.chunks is None:
                sys.exit(f"{path}: {name}: not chunked with Fletcher-32 (chunks {d.chunks})")
            del values
        print(f"datasets {len(names)}")
        print(f"/tokens/ids sum {int(np.asarray(f['/tokens/ids'][()], dtype=np.int64).sum())}")
        print(f"/tokens/seq_offsets last {int(f['/tokens/seq_offsets'][-1])}")


if __name__ == "__main__":
    main()
