"""Webhooks: signed delivery with its SSRF guard, the end-of-job hook, the delivery task."""
