"""Text-generation engines behind one small protocol (see `Completion` and `hf.HFBackend`)."""
