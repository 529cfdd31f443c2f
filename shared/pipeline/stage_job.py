"""What a stage's entry needs of its job (docs/architecture.md, 'Stages and their artifacts').

Every entry named in the stage table (`shared.pipeline.stages.PIPELINE`) is `entry(job, shard)` over a
`StageJob`. Two classes provide one: the embedded run's (`neuron_atlas.pipeline.LocalJob`: a
local folder, models loaded up front, progress to the terminal) and the suite's
(`shared.jobs.tasks.SuiteJob`: the job's S3 prefix, the worker's cached models, progress and reports
to the job store). What differs between the two runs lives there and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from neuron_atlas_client.contracts.input_check import RunWarning
from neuron_atlas_client.options import PipelineOptions
from shared.pipeline.ingest import DecodedShard
from shared.pipeline.progress import Progress
from shared.storage.stores import Store

# `decoder(manifest, shard, shard_size, read_bytes, pixel_budget)`: `shared.pipeline.ingest.decode_shard`,
# or a stage's own that decodes less (the caption stage's skips shards with every caption given).
ShardDecoder = Callable[[dict[str, Any], int, int, Callable[[dict[str, Any]], bytes], int], DecodedShard]


class StageJob(Protocol):
    @property
    def store(self) -> Store:
        """The job's artifacts."""
        ...

    @property
    def options(self) -> PipelineOptions: ...

    @property
    def progress(self) -> Progress:
        """Finer steps within the stage (labels written, concepts tested, ...)."""
        ...

    def manifest(self) -> dict[str, Any]: ...

    def read_image(self, entry: dict[str, Any]) -> bytes:
        """A manifest entry's image bytes (the user's folder, or the job's bucket prefix)."""
        ...

    def shard(self, index: int, decoder: ShardDecoder) -> DecodedShard:
        """The shard's images, decoded by `decoder`; the embedded run decodes each shard once for
        all the per-shard stages (a full decode, which serves every decoder)."""
        ...

    def resource(self, name: str) -> Any:
        """A loaded model or setting the stage needs by name ("target", "captioner",
        "embedder", "labelling", "version"); loaded once and kept by the runner."""
        ...

    def report(self, name: str, document: dict[str, Any]) -> None:
        """A summary for the job's status (the suite shows it on GET /v1/jobs/{id})."""
        ...

    def warn(self, warnings: Sequence[RunWarning]) -> None:
        """Warnings users should see at once, before the run ends (and whether it fails)."""
        ...

    def count_undecodable(self, shard: int, count: int) -> None:
        """Images of the shard that did not decode (counted once, by the activation stage)."""
        ...
