"""Video input/output and the HDF5 dataset file that training, sampling and evaluation read."""
