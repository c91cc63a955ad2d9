"""What the routes do, kept out of the handlers: storing uploads, creating jobs, deleting models, probes."""
