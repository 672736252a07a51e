"""The model card: everything needed to feed a model and read its outputs.

A card travels with the weights (inside the ``.safetensors`` metadata) so that
training, batch scoring and the review app build the same preprocessing and
apply the same thresholds from one source. It is plain data, JSON-serialisable,
and tolerant of cards written by newer medres versions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medres import __version__ as MEDRES_VERSION
from medres.errors import InvalidModelCardError, UsageError

CXR14_LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
"""The 14 ChestX-ray14 findings in the dataset's canonical order (= output order)."""

TASKS: tuple[str, ...] = ("cxr", "seg", "vol")
DEFAULT_THRESHOLD = 0.5
IMAGENET_GRAY_NORMALIZATION: dict[str, Any] = {"kind": "imagenet_gray", "mean": 0.449, "std": 0.226}
"""ImageNet's RGB mean/std averaged over channels, applied to a [0, 1] grayscale image."""
TORCHXRAYVISION_NORMALIZATION: dict[str, Any] = {"kind": "torchxrayvision", "mean": 0.5, "std": 1.0 / 2048.0}
"""torchxrayvision's convention: an 8-bit image scaled to [-1024, 1024], i.e. ``(x - 0.5) * 2048`` on [0, 1]."""
CROPS: tuple[str, ...] = ("none", "center_square")
"""How a radiograph is cropped before it is resized to the input size: ``none`` resizes the whole image,
``center_square`` first keeps the largest centred square (torchxrayvision's ``XRayCenterCrop``)."""
DEFAULT_STORED_SIZE = 256
"""The smallest stored (cache) size of a radiograph; a larger input size is stored at the input size."""
OUTPUT_ACTIVATIONS: tuple[str, ...] = ("sigmoid", "softmax")
"""How logits become probabilities: ``sigmoid`` per label (independent findings), ``softmax`` over the labels
along the channel axis (one class per voxel)."""
DEFAULT_OUTPUT_ACTIVATIONS: dict[str, str] = {"cxr": "sigmoid", "vol": "sigmoid", "seg": "softmax"}
"""The output activation of a card that does not state one, by task."""
DEFAULT_MIRROR_AXES: dict[int, tuple[int, ...]] = {2: (), 3: (0, 1, 2)}
"""The mirror axes of a card that does not state them, by spatial dimensions: 3D training mirrored all three
axes before the field was recorded; 2D models have no mirroring test-time augmentation."""
LEGACY_EXTRA_FIELDS: tuple[str, ...] = ("stored_size", "mirror_axes")
"""Fields that cards written before they were typed kept in ``extra``; they are read from there."""

# Fields a caller may override in ``create_model(name, **overrides)``; the rest
# (name, task, spatial_dims, gradcam_layer, architecture_revision, output_activation) are fixed by the
# architecture and its task.
OVERRIDABLE_FIELDS: tuple[str, ...] = (
    "labels", "in_channels", "input_size", "spacing", "normalization", "thresholds",
    "training_data_fingerprint", "extra", "crop", "stored_size", "mirror_axes",
)


@dataclass(frozen=True)
class ModelCard:
    """What a model expects as input and what its outputs mean.

    Attributes:
        name: The registry name; ``create_model(card.name)`` rebuilds the architecture.
        task: ``"cxr"`` (2D multi-label classifier), ``"seg"`` or ``"vol"``.
        labels: Output names in output order (one logit / channel each).
        in_channels: Input channels the first layer takes. A radiograph is one gray
            channel; its preprocessing (:func:`medres.transforms.cxr.preprocess_for_model`)
            repeats it into each of them, e.g. 3 for a network that keeps an ImageNet
            head. A volume brings one channel per modality (no expansion).
        spatial_dims: 2 for radiographs, 3 for volumes.
        input_size: The spatial size preprocessing resizes or crops to.
        spacing: Target voxel spacing in mm for volumes; ``None`` for radiographs.
        normalization: How intensities are scaled, e.g. ``{"kind": "imagenet_gray",
            "mean": 0.449, "std": 0.226}`` for a [0, 1] grayscale input.
        thresholds: Per-label probability thresholds; missing labels get 0.5, so a
            trained model can carry calibrated operating points.
        gradcam_layer: Dotted module name (for ``model.get_submodule``) whose output
            is the feature map Grad-CAM weighs: the last spatial map before
            pooling, never modified in place after the layer returns (so forward
            and full backward hooks on it are safe; each factory's docstring says
            whether the layer itself computes it in place). Empty when not applicable.
        training_data_fingerprint: Identifies the training data (e.g. a hash of the
            split index); empty for untrained models.
        medres_version: The medres version that wrote the card.
        architecture_revision: Which revision of the registered architecture the
            weights were trained for. A factory raises it when a change keeps
            the state-dict keys and shapes but changes what the same weights
            compute (a stride, a pooling); checkpoints of another revision are
            then refused instead of loading and computing something else. Cards
            written before the field existed are revision 1.
        extra: Free-form data, including fields from newer card versions.
        crop: How a 2D image is cropped before resizing (one of :data:`CROPS`). Cards
            written before the field existed are ``"none"``: the whole image is resized.
        stored_size: The square size a radiograph is stored at (the preprocessing cache,
            ``to_stored``) before it is resized to ``input_size``; ``None`` for volumes.
            Cards that do not state it (registry defaults, cards written before the
            field existed without ``extra["stored_size"]``) get
            ``max(DEFAULT_STORED_SIZE, *input_size)``; older cards kept it in
            ``extra["stored_size"]``, which is read. Overriding ``input_size`` without
            it derives it again.
        mirror_axes: Spatial axes (0-based, in the array's axis order) the model was
            trained to be mirror-invariant along: training flips them, test-time
            augmentation averages over flipped copies along them. Cards that do not
            state it get ``(0, 1, 2)`` for volumes (what 3D training did before the
            axes were recorded) and ``()`` for radiographs; older cards kept it in
            ``extra["mirror_axes"]``, which is read.
        output_activation: How logits become probabilities (one of
            :data:`OUTPUT_ACTIVATIONS`): ``sigmoid`` per label for the multi-label
            classifiers (``cxr``, ``vol``), ``softmax`` over the labels for
            segmentation (``seg``), which is also the default by task for cards that
            do not state it. ``softmax`` needs at least two labels.
    """

    name: str
    task: str
    labels: tuple[str, ...]
    in_channels: int
    spatial_dims: int
    input_size: tuple[int, ...]
    spacing: tuple[float, ...] | None = None
    normalization: dict[str, Any] = field(default_factory=dict, hash=False)
    thresholds: dict[str, float] = field(default_factory=dict, hash=False)
    gradcam_layer: str = ""
    training_data_fingerprint: str = ""
    medres_version: str = MEDRES_VERSION
    architecture_revision: int = 1
    extra: dict[str, Any] = field(default_factory=dict, hash=False)
    crop: str = "none"
    stored_size: int | None = None
    mirror_axes: tuple[int, ...] | None = None
    output_activation: str | None = None

    def __post_init__(self) -> None:
        # Frozen: normalise through object.__setattr__ so JSON lists become tuples
        # and equality after a round trip holds.
        set_field = object.__setattr__
        set_field(self, "labels", tuple(str(label) for label in _as_sequence(self.labels, "labels")))
        set_field(self, "input_size", tuple(int(size) for size in _as_sequence(self.input_size, "input_size")))
        if self.spacing is not None:
            set_field(self, "spacing", tuple(float(step) for step in _as_sequence(self.spacing, "spacing")))
        set_field(self, "normalization", dict(_as_mapping(self.normalization, "normalization")))
        set_field(self, "extra", dict(_as_mapping(self.extra, "extra")))
        set_field(self, "thresholds", _complete_thresholds(self.labels, self.thresholds))
        self._fill_input_contract()
        self._validate()

    def _fill_input_contract(self) -> None:
        """Read legacy ``extra`` entries into their typed fields, then fill unstated fields with the defaults."""
        set_field = object.__setattr__
        for name in LEGACY_EXTRA_FIELDS:
            if name not in self.extra:
                continue
            legacy = self.extra.pop(name)  # self.extra is this card's own copy
            stated = getattr(self, name)
            if stated is None:
                set_field(self, name, legacy)
            elif _comparable(stated) != _comparable(legacy):
                raise InvalidModelCardError(f"{name} is {stated!r} but extra[{name!r}] says {legacy!r}; "
                                            f"keep only the {name} field")
        if self.stored_size is None and self.spatial_dims == 2:
            set_field(self, "stored_size", max(DEFAULT_STORED_SIZE, *self.input_size))
        if self.mirror_axes is None:
            set_field(self, "mirror_axes", DEFAULT_MIRROR_AXES.get(self.spatial_dims, ()))
        set_field(self, "mirror_axes", _as_axes(self.mirror_axes))
        if self.output_activation is None:
            set_field(self, "output_activation", DEFAULT_OUTPUT_ACTIVATIONS.get(self.task))

    def _validate(self) -> None:
        if self.task not in TASKS:
            raise InvalidModelCardError(f"task {self.task!r} is not one of {', '.join(TASKS)}")
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise InvalidModelCardError(f"labels must be non-empty and unique, got {self.labels}")
        if self.in_channels < 1 or self.spatial_dims not in (2, 3):
            raise InvalidModelCardError(
                f"in_channels must be >= 1 and spatial_dims 2 or 3, got {self.in_channels}, {self.spatial_dims}"
            )
        if len(self.input_size) != self.spatial_dims or min(self.input_size) < 1:
            raise InvalidModelCardError(f"input_size {self.input_size} needs {self.spatial_dims} positive sizes")
        if self.spacing is not None and len(self.spacing) != self.spatial_dims:
            raise InvalidModelCardError(f"spacing {self.spacing} needs {self.spatial_dims} values")
        if not isinstance(self.architecture_revision, int) or self.architecture_revision < 1:
            raise InvalidModelCardError(f"architecture_revision must be a positive integer, got "
                                        f"{self.architecture_revision!r}")
        if self.crop not in CROPS:
            raise InvalidModelCardError(f"crop {self.crop!r} is not one of {', '.join(CROPS)}")
        self._validate_input_contract()

    def _validate_input_contract(self) -> None:
        if self.spatial_dims == 2 and not _is_positive_integer(self.stored_size):
            raise InvalidModelCardError(f"stored_size must be a positive integer, got {self.stored_size!r}")
        if self.spatial_dims == 3 and self.stored_size is not None:
            raise InvalidModelCardError(f"stored_size applies to radiographs only; a volume card has none, "
                                        f"got {self.stored_size!r}")
        if any(axis >= self.spatial_dims for axis in self.mirror_axes):
            raise InvalidModelCardError(f"mirror_axes {self.mirror_axes} must be spatial axes below "
                                        f"{self.spatial_dims}")
        if self.output_activation not in OUTPUT_ACTIVATIONS:
            raise InvalidModelCardError(f"output_activation {self.output_activation!r} is not one of "
                                        f"{', '.join(OUTPUT_ACTIVATIONS)}")
        if self.output_activation == "softmax" and len(self.labels) < 2:
            raise InvalidModelCardError(f"a softmax output needs at least two labels, got {self.labels}")

    def to_json(self) -> str:
        """The card as a JSON object (sorted keys, so equal cards give equal text)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCard:
        """Parse a card written by :meth:`to_json`, from this or a newer medres.

        Keys this version does not know are kept in ``extra`` rather than refused,
        so an older medres can still run a checkpoint written by a newer one; an
        explicit ``extra`` entry of the same name wins.

        Raises:
            InvalidModelCardError: The text is not a JSON object, lacks a required
                field or holds an invalid value.
        """
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as error:
            raise InvalidModelCardError(f"the model card is not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise InvalidModelCardError("the model card must be a JSON object")
        known = {card_field.name for card_field in dataclasses.fields(cls)}
        unknown = {key: value for key, value in data.items() if key not in known}
        arguments = {key: value for key, value in data.items() if key in known}
        arguments["extra"] = {**unknown, **_as_mapping(arguments.get("extra", {}), "extra")}
        missing = sorted(_required_fields(cls) - arguments.keys())
        if missing:
            raise InvalidModelCardError(f"the model card lacks required fields: {', '.join(missing)}")
        try:
            return cls(**arguments)
        except (TypeError, ValueError) as error:
            raise InvalidModelCardError(f"the model card holds an invalid value ({error})") from None

    def with_overrides(self, **overrides: Any) -> ModelCard:
        """A copy with some fields replaced, as ``create_model(name, **overrides)`` needs.

        When ``labels`` change and ``thresholds`` are not given, thresholds are
        rebuilt for the new labels (0.5 each) instead of keeping stale ones; when
        ``input_size`` changes and ``stored_size`` is not given, the stored size is
        derived again from the new input size. A legacy entry of an ``extra``
        override (``extra={"stored_size": 512}``) sets its typed field.

        Raises:
            UsageError: An override names a field fixed by the architecture or no
                field at all.
        """
        not_allowed = sorted(set(overrides) - set(OVERRIDABLE_FIELDS))
        if not_allowed:
            raise UsageError(
                f"cannot override {', '.join(not_allowed)} of model {self.name!r}; "
                f"overridable card fields are: {', '.join(OVERRIDABLE_FIELDS)}"
            )
        if "labels" in overrides and "thresholds" not in overrides:
            overrides["thresholds"] = {}
        if "extra" in overrides:
            extra = dict(_as_mapping(overrides["extra"], "extra"))
            for name in LEGACY_EXTRA_FIELDS:
                if name in extra and name not in overrides:
                    overrides[name] = extra.pop(name)
            overrides["extra"] = extra
        if "input_size" in overrides and "stored_size" not in overrides:
            overrides["stored_size"] = None
        return dataclasses.replace(self, **overrides)


def _required_fields(cls: type[ModelCard]) -> set[str]:
    return {
        card_field.name
        for card_field in dataclasses.fields(cls)
        if card_field.default is dataclasses.MISSING and card_field.default_factory is dataclasses.MISSING
    }


def _as_sequence(value: Any, field_name: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidModelCardError(f"{field_name} must be a list or tuple, got {value!r}")
    return value


def _as_axes(value: Any) -> tuple[int, ...]:
    """Mirror axes as a tuple of distinct non-negative integers (a JSON list becomes a tuple)."""
    axes = tuple(_as_sequence(value, "mirror_axes"))
    if not all(_is_integer(axis) and axis >= 0 for axis in axes):
        raise InvalidModelCardError(f"mirror_axes must be non-negative integers, got {value!r}")
    if len(set(axes)) != len(axes):
        raise InvalidModelCardError(f"mirror_axes must not repeat an axis, got {value!r}")
    return axes


def _is_integer(value: Any) -> bool:
    """An ``int`` that is not a ``bool`` (JSON ``true`` is not a size)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_integer(value: Any) -> bool:
    return _is_integer(value) and value >= 1


def _comparable(value: Any) -> Any:
    """A field value in a form where a JSON list and a tuple compare equal."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _as_mapping(value: Any, field_name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidModelCardError(f"{field_name} must be a mapping, got {value!r}")
    return value


def _complete_thresholds(labels: tuple[str, ...], thresholds: Any) -> dict[str, float]:
    """Thresholds for every label in label order: given values, else 0.5."""
    given = _as_mapping(thresholds, "thresholds")
    strangers = sorted(set(given) - set(labels))
    if strangers:
        raise InvalidModelCardError(f"thresholds name labels the card does not have: {', '.join(strangers)}")
    completed = {label: float(given.get(label, DEFAULT_THRESHOLD)) for label in labels}
    out_of_range = [label for label, value in completed.items() if not 0.0 <= value <= 1.0]  # NaN fails too
    if out_of_range:
        raise InvalidModelCardError(f"thresholds must be probabilities in [0, 1]; check {', '.join(out_of_range)}")
    return completed
