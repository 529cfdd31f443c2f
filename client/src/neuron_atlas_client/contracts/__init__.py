"""Typed contracts: one pydantic model per stored artifact and per API answer.

Defined once, here, for both sides: the suite writes and reads its artifacts through them
(`shared.storage.artifacts.write_model` / `read_model`) and answers with them, and the client parses the
answers with them. The published JSON Schema of hierarchy.json is generated from `Hierarchy`
(`python -m shared.contracts.schema`, in the main distribution). Pure pydantic: no torch, no Redis.
"""
