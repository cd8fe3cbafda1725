"""See the package docstring of cram_keras."""
