"""What a caller sees of a worker's message: no path, host or address of the suite."""

from __future__ import annotations

import pytest

from shared.public_text import redact


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("Weights file /tmp/neuron-atlas-model-x1/model.safetensors is broken", "/tmp"),
        ("ImageNet weights are not in /root/.cache/torch/hub/checkpoints", "/root"),
        ("HTTPConnectionPool(host='127.0.0.1', port=9000): Max retries exceeded", "127.0.0.1"),
        ("could not reach minio:9000", "minio:9000"),
        ("resolves to 10.1.2.3", "10.1.2.3"),
        ("resolves to fd00:ec2::254", "fd00:ec2::254"),
        ("see http://mlflow.mlops.svc:5000/api/2.0", "mlflow.mlops.svc"),
        ("copied ~/.ssh/id_rsa", ".ssh"),
    ],
)
def test_paths_hosts_and_addresses_are_redacted(text: str, hidden: str) -> None:
    assert hidden not in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "The state dict does not fit resnet18: 2 missing (fc.weight, fc.bias).",
        "layer1.0.conv1.weight: model [64, 64, 3, 3], file [64, 3, 7, 7]",
        "An MLflow import takes models:/NAME/VERSION or runs:/RUN_ID/PATH only.",
        "options.layers names 'stages.3'; GET /v1/models/ab12/layers lists them",
        "top-1 0.12 at 64x64 px, ratio 3:4",
    ],
)
def test_what_a_user_needs_is_kept(text: str) -> None:
    assert redact(text) == text
