"""Errors a user can act on: each says what was wrong and what to do about it."""

from __future__ import annotations


class NeuronAtlasError(Exception):
    """Base class; `problem` names what went wrong, `fix` tells the user what to do."""

    #: Short machine-readable kind, used as the problem+json `type` suffix by the API.
    kind = "error"

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} {fix}".strip())


class InputError(NeuronAtlasError):
    """The images, captions or options the user gave cannot be used."""

    kind = "invalid-input"


class ModelLoadError(NeuronAtlasError):
    """A model or its weights could not be found or loaded."""

    kind = "model-unavailable"


class LabellingError(NeuronAtlasError):
    """The labelling endpoint failed and strict mode forbids falling back to offline labels."""

    kind = "labelling-failed"


class MissingExtra(NeuronAtlasError):
    """A command needs an optional part of the package that is not installed (an extra)."""

    kind = "missing-extra"


class InputCheckFailed(InputError):
    """With `strict`: the target model does not recognise the labelled images as given (input
    size, normalisation, or a head that does not match the labels)."""

    kind = "model-input-mismatch"
