"""Evaluation on held-out chat examples: greedy answers scored by exact match and by containment.

``examples`` (torch-free: reading a file, scoring an answer, the result) is shared with the API, which scores
the answers its inference engine generates; ``answers`` generates them from a model in this process.
"""
