"""torchxrayvision's published chest X-ray models: what each release file predicts and how it is fed.

The facts of torchxrayvision's model table (``xrv.models.model_urls``,
version 1.5.7): each variant's release file, its 18 output names in output
order (an empty name is an output that variant was not trained for), its
operating thresholds (``op_threshs``; NaN where unpublished, ``None`` here)
and its input resolution. The architectures are torchxrayvision's DenseNet-121
(torchvision's layout, 1 input channel) and, for ``resnet50-res512-all``,
torchvision's ResNet-50 with a 1-channel ``conv1``; medres runs them as
``chexnet_densenet121`` and ``chexnet_resnet50``.

Every variant expects torchxrayvision's preprocessing: an 8-bit image scaled
to [-1024, 1024], the largest centred square, an antialiased resize to the
resolution. torchxrayvision's ``op_norm`` maps each threshold to 0.5; medres
reports plain sigmoid probabilities and calls ``probability >= threshold``,
which is the same call.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from medres.errors import UsageError

RELEASE_URL = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"

_PATHOLOGIES_18: tuple[str, ...] = (
    "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis", "Effusion",
    "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia", "Lung Lesion", "Fracture",
    "Lung Opacity", "Enlarged Cardiomediastinum",
)
"""torchxrayvision's 18 output positions (``default_pathologies``); variants blank the ones they lack."""


def _outputs(*present: str) -> tuple[str, ...]:
    """The 18 output names of a variant that predicts only ``present`` (the rest are empty names)."""
    return tuple(name if name in present else "" for name in _PATHOLOGIES_18)


_NIH_14 = _PATHOLOGIES_18[:14]
_CHEXPERT_11 = ("Atelectasis", "Consolidation", "Pneumothorax", "Edema", "Effusion", "Pneumonia", "Cardiomegaly",
                "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum")
_NAN = None


@dataclass(frozen=True)
class PublishedModel:
    """One torchxrayvision release.

    Attributes:
        variant: torchxrayvision's weights name, e.g. ``densenet121-res224-nih``.
        release_file: The file name of the release download.
        architecture: The medres registry model that computes what the variant computes.
        outputs: The release's output names in output order; ``""`` marks an unused output.
        op_threshs: Per output, the published operating threshold on the sigmoid
            probability, ``None`` where torchxrayvision publishes NaN.
        input_resolution: The square input size the variant was trained at.
    """

    variant: str
    release_file: str
    architecture: str
    outputs: tuple[str, ...]
    op_threshs: tuple[float | None, ...]
    input_resolution: int

    @property
    def url(self) -> str:
        """Where torchxrayvision downloads the release file from."""
        return RELEASE_URL + self.release_file

    @property
    def labels(self) -> tuple[str, ...]:
        """The named outputs, in output order: the labels of the imported model."""
        return tuple(name for name in self.outputs if name)

    @property
    def output_indices(self) -> tuple[int, ...]:
        """Positions of :attr:`labels` among the release's outputs (the head rows kept)."""
        return tuple(index for index, name in enumerate(self.outputs) if name)

    @property
    def thresholds(self) -> dict[str, float]:
        """The published threshold of each label that has one (the rest default to 0.5 on the card)."""
        return {name: threshold for name, threshold in zip(self.outputs, self.op_threshs, strict=True)
                if name and threshold is not None}

    @property
    def labels_without_threshold(self) -> tuple[str, ...]:
        """Named outputs for which torchxrayvision publishes no threshold."""
        pairs = zip(self.outputs, self.op_threshs, strict=True)
        return tuple(name for name, threshold in pairs if name and threshold is None)


_DENSENET_FILE = "-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"

PUBLISHED_MODELS: dict[str, PublishedModel] = {model.variant: model for model in (
    PublishedModel(
        "densenet121-res224-all", "nih-pc-chex-mimic_ch-google-openi-kaggle" + _DENSENET_FILE, "chexnet_densenet121",
        _PATHOLOGIES_18,
        (0.07422872, 0.038290843, 0.09814756, 0.0098118475, 0.023601074, 0.0022490358, 0.010060724, 0.103246614,
         0.056810737, 0.026791653, 0.050318155, 0.023985857, 0.01939503, 0.042889766, 0.053369623, 0.035975814,
         0.20204692, 0.05015312),
        224),
    PublishedModel(
        "densenet121-res224-nih", "nih" + _DENSENET_FILE, "chexnet_densenet121", _outputs(*_NIH_14),
        (0.039117552, 0.0034529066, 0.11396341, 0.0057298196, 0.00045666535, 0.0018880932, 0.012037827, 0.038744126,
         0.0037213727, 0.014730946, 0.016149804, 0.054241467, 0.037198864, 0.0004403434, _NAN, _NAN, _NAN, _NAN),
        224),
    PublishedModel(
        "densenet121-res224-pc", "pc" + _DENSENET_FILE, "chexnet_densenet121", _outputs(*_NIH_14, "Fracture"),
        (0.031012505, 0.013347598, 0.081435576, 0.001262615, 0.002587246, 0.0035944257, 0.0023071, 0.055412333,
         0.044385884, 0.042766232, 0.043258056, 0.037629247, 0.005658899, 0.0091741895, _NAN, 0.026507627, _NAN,
         _NAN),
        224),
    PublishedModel(
        "densenet121-res224-chex", "chex" + _DENSENET_FILE, "chexnet_densenet121", _outputs(*_CHEXPERT_11),
        (0.1988969, 0.05710573, _NAN, 0.0531293, 0.1435217, _NAN, _NAN, 0.27212676, 0.07749717, _NAN, 0.19712369,
         _NAN, _NAN, _NAN, 0.09932402, 0.09273402, 0.3270967, 0.10888247),
        224),
    PublishedModel(
        "densenet121-res224-rsna", "kaggle" + _DENSENET_FILE, "chexnet_densenet121",
        _outputs("Pneumonia", "Lung Opacity"),
        (_NAN, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN, 0.13486601, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN,
         0.13511065, _NAN),
        224),
    PublishedModel(
        "densenet121-res224-mimic_nb", "mimic_nb" + _DENSENET_FILE, "chexnet_densenet121", _outputs(*_CHEXPERT_11),
        (0.08558747, 0.011884617, _NAN, 0.0040595434, 0.010733786, _NAN, _NAN, 0.118761964, 0.022924708, _NAN,
         0.06358637, _NAN, _NAN, _NAN, 0.022143636, 0.017476924, 0.1258702, 0.014020768),
        224),
    PublishedModel(
        "densenet121-res224-mimic_ch", "mimic_ch" + _DENSENET_FILE, "chexnet_densenet121", _outputs(*_CHEXPERT_11),
        (0.09121389, 0.010573786, _NAN, 0.005023008, 0.003698257, _NAN, _NAN, 0.08001232, 0.037242252, _NAN,
         0.05006329, _NAN, _NAN, _NAN, 0.019866971, 0.03823637, 0.11303808, 0.0069147074),
        224),
    PublishedModel(
        "resnet50-res512-all", "pc-nih-rsna-siim-vin-resnet50-test512-e400-state.pt", "chexnet_resnet50",
        _PATHOLOGIES_18,
        (0.51570356, 0.50444704, 0.53787947, 0.50723547, 0.5025118, 0.5035252, 0.5038076, 0.51862943, 0.5078151,
         0.50724894, 0.5056339, 0.510706, 0.5053923, 0.5020846, _NAN, 0.5080557, 0.5138526, _NAN),
        512),
)}
"""Variant name -> its published facts, for every release ``medres import-weights --from torchxrayvision`` reads."""


def published_model(variant: str | None, path: str | PathLike[str] | None = None) -> PublishedModel:
    """The release a file is: the named ``variant``, else the one whose release file name ``path`` has.

    Raises:
        UsageError: The variant is unknown, or none was given and the file's
            name is not a release file's name; the message lists the variants.
    """
    if variant is not None:
        if variant in PUBLISHED_MODELS:
            return PUBLISHED_MODELS[variant]
        close = difflib.get_close_matches(variant, list(PUBLISHED_MODELS), n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown torchxrayvision variant {variant!r}; the published ones are: "
                         f"{', '.join(PUBLISHED_MODELS)}.{hint}")
    name = Path(path).name if path is not None else ""
    for model in PUBLISHED_MODELS.values():
        if name == model.release_file:
            return model
    raise UsageError(f"cannot tell which torchxrayvision model {name or 'the file'} is (it is not named as a "
                     f"release file); name it with --variant, one of: {', '.join(PUBLISHED_MODELS)}", path=path)
