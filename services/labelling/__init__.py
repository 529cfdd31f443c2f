"""The labelling service: cluster labels from an LLM (or offline), the hierarchy's assembly, webhooks."""
