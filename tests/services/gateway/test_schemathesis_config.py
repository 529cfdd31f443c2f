"""schemathesis.toml widens the accepted statuses of exactly the operations it names.

Its blocks once selected operations by `include-path` and `include-method`, which schemathesis
ORs: every POST and every method on /v1/jobs took the job submission's list, and POST /v1/models
took it too (the first match wins), so a pickled checkpoint's 415 failed the fuzz test at random
seeds."""

from __future__ import annotations

import schemathesis
from schemathesis.config import SchemathesisConfig

from services.gateway.main import app
from tests.services.gateway.test_schemathesis import CONFIG

WIDENED = {
    "POST /v1/jobs": ["2xx", "401", "404", "409", "422", "429", "503"],
    "POST /v1/models": ["2xx", "401", "413", "415", "422", "503"],
}


def test_each_operation_gets_its_own_accepted_statuses_in_every_phase() -> None:
    schema = schemathesis.openapi.from_dict(app.openapi(), config=SchemathesisConfig.from_path(CONFIG))
    default = SchemathesisConfig().projects.default.checks.positive_data_acceptance.expected_statuses
    labels = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.add(operation.label)
        for phase in ("examples", "coverage", "fuzzing", "stateful"):
            checks = schema.config.checks_config_for(operation=operation, phase=phase)
            expected = WIDENED.get(operation.label, default)
            assert checks.positive_data_acceptance.expected_statuses == expected, (operation.label, phase)
    assert set(WIDENED) <= labels
