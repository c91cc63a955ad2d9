"""Getting a model out: the adapter as an archive, a merged Hugging Face checkpoint, a GGUF for llama.cpp.

``build.py`` builds each form once per adapter (cached on disk, atomically, under a file lock); ``merged.py``
merges an adapter into its base model and saves a checkpoint; ``gguf_file.py`` converts such a checkpoint.
"""
