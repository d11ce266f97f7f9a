#!/usr/bin/env python3
"""Cuts the bundled MNIST subset from the official files: python3 cut.py SRC_DIR DST_DIR."""
import gzip, struct, sys, hashlib
src, dst = sys.argv[1], sys.argv[2]
def cut(name, n):
    raw = gzip.open(f"{src}/{name}", "rb").read()
    magic, = struct.unpack(">I", raw[:4]); nd = magic & 0xFF
    dims = list(struct.unpack(">" + "I"*nd, raw[4:4+4*nd]))
    item = 1
    for d in dims[1:]: item *= d
    off = 4 + 4*nd
    dims[0] = n
    out = raw[:4] + struct.pack(">" + "I"*nd, *dims) + raw[off:off+n*item]
    with open(f"{dst}/{name}", "wb") as f:
        # mtime=0 and no file name: byte-identical output on every run
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as g:
            g.write(out)
    print(name, dims, hashlib.sha256(out).hexdigest())
cut("train-images-idx3-ubyte.gz", 10000)
cut("train-labels-idx1-ubyte.gz", 10000)
cut("t10k-images-idx3-ubyte.gz", 2000)
cut("t10k-labels-idx1-ubyte.gz", 2000)
