"""The published JSON Schema of hierarchy.json (`schema.py`). The contracts themselves, one
pydantic model per stored artifact and per API answer, live in the client distribution
(`neuron_atlas_client.contracts`), so the suite and the client share one definition.
"""
