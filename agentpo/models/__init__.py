"""Model builders: tiny random-init causal LMs with locally defined tokenizers, for tests and the CPU quick start."""
