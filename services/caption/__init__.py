"""The caption service: BLIP captions for the images that have none."""
