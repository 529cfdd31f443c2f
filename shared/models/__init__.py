"""Models: hub access, allowed names, registered models, safetensors, the embedder, devices."""
