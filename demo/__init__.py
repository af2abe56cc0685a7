"""`make demo` (`python -m demo`): a local cluster in one command. Not part of the product."""
