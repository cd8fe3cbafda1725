"""The C++ source of the compiled sampler kernel; see `cram_keras.ops.native_sampler`."""
