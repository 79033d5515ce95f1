"""The data side: sources, face cropping, the HDF5 cache. Never imports TensorFlow or MLflow."""
