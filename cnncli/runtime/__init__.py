"""Where and how the work runs: the device and precision, OpenMP's wait policy, torchrun's ranks,
ordered worker processes, and the progress bars on stderr."""
