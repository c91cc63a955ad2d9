"""DiaBlo: diagonal-block fine-tuning of language models (public API re-exported by the lead)."""
