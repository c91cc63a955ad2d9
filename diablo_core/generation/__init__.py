"""Generation: sampling, greedy and streamed decoding, and stop strings."""
