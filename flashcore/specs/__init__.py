"""One module per chapter, each exporting ``SPECS``: the kernels that chapter builds (see flashcore.kernels)."""
