"""Target schedules of the integer kernels (the kernels themselves live in :mod:`tvm_arq.ops`)."""
