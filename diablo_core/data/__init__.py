"""Data: chat JSONL reading and validation, and tokenization into training examples."""
