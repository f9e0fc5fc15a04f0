"""livecheck fine-tuning pipeline (see training/README.md)."""
