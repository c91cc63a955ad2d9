"""The HTTP control plane: an OpenAI-shaped FastAPI app over the registry (``api.main.create_app``)."""
