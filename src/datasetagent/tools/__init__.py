"""The Tool Package: pure functions on image bytes and pixel arrays."""
