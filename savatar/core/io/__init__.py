"""Files: avatar files (HDF5), 3DGS PLY, atomic writes, video writing and 8-bit pixels."""
