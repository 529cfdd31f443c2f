"""The one instrumented model: every forward hook put on a target model is registered here.

Reading pooled activations, zeroing or keeping channels, per-image channel masks, injected
dropout, probing which modules run and stopping a pass at a layer all hook the model. They all
go through `InstrumentedModel`, in the spirit of netdissect's `nethook.InstrumentedModel`
(retain a layer, edit a layer), so a hook bug has one place to live: a hook left behind on a
cached model, or one on a module that runs twice per pass (torchvision's shared in-place ReLU).
tests/neuron_core/test_instrumented.py checks that no other product module registers one.

Every registration returns a `Hooks`: `remove()` takes its hooks off, and as a context manager
it takes them off when the block ends, however it ends. `InstrumentedModel.close()` (or leaving
its own `with`) removes every hook the instance put on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from neuron_atlas_client.errors import InputError
from neuron_core.neuron_axis import LayerInfo

__all__ = [
    "ChannelMask",
    "Edit",
    "Hooks",
    "InstrumentedModel",
    "Watch",
    "channel_axis",
    "pool_channels",
    "scale_channels",
]

# An edit gets a layer's output (with `at_input`, its first input) as the module produced it and
# returns its replacement, or None to leave it as it is.
Edit = Callable[[Any], Any]
# A watcher gets the layer's name and its output (with `at_input`, its first input); it changes nothing.
Watch = Callable[[str, Any], None]


class StopForward(Exception):
    """Raised from a hook to end a pass once the layer it waits for has run (`stop_at`)."""


def channel_axis(output: torch.Tensor) -> int:
    """Where a layer output keeps its channels: axis 1 of (N,C) and (N,C,H,W), the last axis of
    a token layer's (N,T,C). Pooling, zeroing and masking all read it here, so an ablation
    zeroes the channels that were pooled (a (N,C) mask on axis 1 of (N,T,C) would scale tokens
    where T == C and fail to broadcast otherwise)."""
    if output.ndim in (2, 4):
        return 1
    if output.ndim == 3:
        return 2
    raise InputError(f"Layer output of shape {tuple(output.shape)} has no channel axis.")


def pool_channels(output: torch.Tensor) -> torch.Tensor:
    """One value per channel: mean over space (N,C,H,W) or tokens (N,T,C), summed in float32 (a
    bfloat16 pass would otherwise round the mean to three digits and tie near the top 10%)."""
    if output.ndim == 4:
        return output.mean(dim=(2, 3), dtype=torch.float32)
    if output.ndim == 3:
        return output.mean(dim=1, dtype=torch.float32)
    if output.ndim == 2:
        return output.float()
    raise InputError(f"Layer output of shape {tuple(output.shape)} has no channel axis to pool.")


def scale_channels(output: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """`output` ((N,C), (N,C,H,W) or tokens (N,T,C); `channel_axis`) with each channel multiplied
    by `scale`: (images, channels), one row per image (a per-image mask), or (channels,), the
    same for every image."""
    rows = scale if scale.ndim == 2 else scale.view(1, -1)
    if channel_axis(output) == 2:  # tokens: one row per image, the same for each of its tokens
        return output * rows.unsqueeze(1).to(output.dtype)
    return output * rows.view(*rows.shape, *([1] * (output.ndim - 2))).to(output.dtype)


class Hooks:
    """The hooks one registration put on the model; `remove()` takes them off (again: nothing)."""

    def __init__(
        self, owner: InstrumentedModel, handles: Iterable[RemovableHandle], retained: Sequence[str] = ()
    ) -> None:
        self._owner = owner
        self._handles = list(handles)
        self.retained = list(retained)  # layers whose pooled outputs these hooks keep

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def remove(self) -> None:
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()
        self._owner._forget(self)

    def __enter__(self) -> Hooks:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()


class ChannelMask(Hooks):
    """Per-image keep masks on the output of several layers whose channels lie side by side in a
    neuron axis (`LayerInfo.offset`): `keep` is a float tensor (images, neurons) over all their
    neurons, each layer's output multiplied by its columns, or None (no change)."""

    def __init__(self, owner: InstrumentedModel, layers: Sequence[LayerInfo]) -> None:
        self.layers = list(layers)
        self.keep: torch.Tensor | None = None
        super().__init__(owner, [])
        for layer in self.layers:  # every name checked before any hook
            owner.layer(layer.name)
        self._handles = [owner._edit_hook(layer.name, self._edit_for(layer)) for layer in self.layers]

    def _edit_for(self, layer: LayerInfo) -> Edit:
        def edit(output: torch.Tensor) -> torch.Tensor | None:
            if self.keep is None:
                return None
            return scale_channels(output, self.keep[:, layer.offset : layer.offset + layer.channels])

        return edit


class InstrumentedModel:
    """A module with named layers to retain (pooled outputs, one pass at a time, `retain` and
    `run`), to edit (`edit`, `zero_channels`, `keep_channels`, `mask_channels`), to watch
    (`watch`) and to stop a pass at (`stop_at`). Several instances may instrument one module;
    hooks fire in the order they were registered, whichever instance registered them."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._modules = dict(module.named_modules())
        self._hooks: list[Hooks] = []
        self._retained_names: list[str] = []
        self._retained: dict[str, torch.Tensor] = {}
        self._recording = False  # retained layers record only inside run(), not in other passes
        # What the last run() returned (a classifier's logits): the pass runs the whole model,
        # so its predictions come free.
        self.output: object = None

    def layer(self, name: str) -> nn.Module:
        """The module called `name` ("" is the whole model)."""
        try:
            return self._modules[name]
        except KeyError:
            raise InputError(
                f"{type(self.module).__name__} has no module {name!r}.",
                "`neuron-atlas layers MODEL` lists the readable layers.",
            ) from None

    # retaining

    def retain(self, names: Sequence[str]) -> Hooks:
        """Keep the pooled output (`pool_channels`, float32) of each of `names` in every `run`;
        each must run once per pass (a module that runs twice would be pooled after later
        in-place changes) and output a tensor (or a tuple that starts with one)."""
        new = [name for name in names if name not in self._retained_names]
        targets = [(name, self.layer(name)) for name in new]  # every name checked before any hook
        handles = [module.register_forward_hook(self._retain_hook(name)) for name, module in targets]
        self._retained_names += new
        return self._register(handles, retained=new)

    def _retain_hook(self, name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if not self._recording:
                return
            if name in self._retained:
                raise InputError(
                    f"Layer {name!r} runs more than once per forward pass.",
                    "Choose the block that contains it instead (e.g. layer1.0, not layer1.0.relu).",
                )
            tensor = output[0] if isinstance(output, tuple) else output
            if not isinstance(tensor, torch.Tensor):
                raise InputError(f"Layer {name!r} does not output a tensor.")
            self._retained[name] = pool_channels(tensor.detach()).float()

        return hook

    def run(
        self, inputs: torch.Tensor, forward: Callable[[torch.Tensor], object] | None = None
    ) -> dict[str, torch.Tensor]:
        """One pass (the model's, or `forward`'s: a part of it that calls the same modules from
        an input further in) with the retained layers recording: their pooled outputs (images,
        channels) by name, in the order retained. Its output is left in `self.output`."""
        self._retained.clear()
        self._recording = True
        try:
            self.output = (forward or self.module)(inputs)
        finally:
            self._recording = False
        missing = [name for name in self._retained_names if name not in self._retained]
        if missing:
            raise InputError(
                f"Layer(s) {', '.join(missing)} did not run in the forward pass.",
                "Choose modules that the model's forward pass uses.",
            )
        return {name: self._retained[name] for name in self._retained_names}

    # editing

    def edit(self, name: str, edit: Edit, at_input: bool = False) -> Hooks:
        """Replace the output of layer `name` (with `at_input`, its first input) by what `edit`
        returns for it, in every pass until removed; None from `edit` leaves it unchanged."""
        return self._register([self._edit_hook(name, edit, at_input)])

    def _edit_hook(self, name: str, edit: Edit, at_input: bool = False) -> RemovableHandle:
        module = self.layer(name)
        if at_input:

            def pre_hook(_module: nn.Module, inputs: tuple[object, ...]) -> tuple[object, ...] | None:
                changed = edit(inputs[0]) if inputs else None
                return None if changed is None else (changed, *inputs[1:])

            return module.register_forward_pre_hook(pre_hook)

        def hook(_module: nn.Module, _inputs: object, output: object) -> object:
            return edit(output)

        return module.register_forward_hook(hook)

    def zero_channels(self, name: str, channels: Sequence[int]) -> Hooks:
        """Zero `channels` of layer `name`'s output (on its `channel_axis`) for every image."""
        return self.edit(name, _channel_scale(channels, keep=False))

    def keep_channels(self, name: str, channels: Sequence[int]) -> Hooks:
        """Zero every channel of layer `name`'s output except `channels`."""
        return self.edit(name, _channel_scale(channels, keep=True))

    def mask_channels(self, layers: Sequence[LayerInfo]) -> ChannelMask:
        """Per-image keep masks over the channels of `layers` (see `ChannelMask`), off until its
        `keep` is set."""
        mask = ChannelMask(self, layers)
        self._hooks.append(mask)
        return mask

    # watching and stopping

    def watch(self, names: Sequence[str], watch: Watch, at_input: bool = False) -> Hooks:
        """Call `watch(name, output)` (with `at_input`, the first input) whenever one of `names`
        runs, in registration order; it sees values, it does not change them."""

        def hook_for(name: str) -> Callable[..., None]:
            if at_input:
                return lambda _module, inputs: watch(name, inputs[0] if inputs else None)
            return lambda _module, _inputs, output: watch(name, output)

        targets = [(name, self.layer(name)) for name in names]  # every name checked before any hook
        if at_input:
            handles = [module.register_forward_pre_hook(hook_for(name)) for name, module in targets]
        else:
            handles = [module.register_forward_hook(hook_for(name)) for name, module in targets]
        return self._register(handles)

    def stop_at(self, name: str, inputs: torch.Tensor, at_input: bool = False) -> torch.Tensor | None:
        """Run the model until layer `name` has run and return its output (with `at_input`, its
        first input) without running the rest; None where it did not run on a tensor.

        The output is taken after every other hook on the layer (edits there change it: leave
        them inactive), the input before every other pre-hook (injected dropout)."""
        captured: list[torch.Tensor] = []

        def keep(value: object) -> None:
            if isinstance(value, torch.Tensor):
                captured.append(value)
            raise StopForward

        layer = self.layer(name)
        if at_input:
            handle = layer.register_forward_pre_hook(lambda _m, inputs: keep(inputs[0]), prepend=True)
        else:
            handle = layer.register_forward_hook(lambda _m, _inputs, output: keep(output))
        try:
            self.module(inputs)
        except StopForward:
            pass
        finally:
            handle.remove()
        return captured[0] if captured else None

    # removing

    def _register(self, handles: Sequence[RemovableHandle], retained: Sequence[str] = ()) -> Hooks:
        hooks = Hooks(self, handles, retained)
        self._hooks.append(hooks)
        return hooks

    def _forget(self, hooks: Hooks) -> None:
        self._hooks = [kept for kept in self._hooks if kept is not hooks]
        gone = set(hooks.retained)
        self._retained_names = [name for name in self._retained_names if name not in gone]
        for name in gone:
            self._retained.pop(name, None)

    def remove(self, hooks: Hooks | None = None) -> None:
        """Take `hooks` off the model, or, with None, every hook this instance put on."""
        if hooks is not None:
            hooks.remove()
            return
        for kept in list(self._hooks):
            kept.remove()

    def close(self) -> None:
        self.remove()

    def __enter__(self) -> InstrumentedModel:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()  # the model may be cached and reused: leave no hook behind


def _channel_scale(channels: Sequence[int], keep: bool) -> Edit:
    chosen = list(channels)

    def edit(output: object) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.ndim not in (2, 3, 4):
            raise InputError(
                "Channels can be zeroed only in an (images, channels), (images, tokens, channels) "
                "or (images, channels, H, W) output.",
                "Choose a layer whose output is one of these.",
            )
        scale = torch.full((output.shape[channel_axis(output)],), float(not keep), device=output.device)
        scale[chosen] = float(keep)
        return scale_channels(output, scale)

    return edit
