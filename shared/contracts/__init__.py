"""Typed contracts: one pydantic model per stored artifact and per API answer.

Artifacts are written and read only through these models (`shared.artifacts.write_model` /
`read_model`), and the published JSON Schema of hierarchy.json is generated from `Hierarchy`
(`python -m shared.contracts.schema`). Pure pydantic: the gateway imports them too.
"""
