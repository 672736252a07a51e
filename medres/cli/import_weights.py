"""``medres import-weights FILE --from SOURCE --out CKPT``: published weights -> an ordinary medres checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from medres.models.pretrained.importers import SOURCES
from medres.models.pretrained.published import PUBLISHED_MODELS

EPILOG = """\
sources:
  torchvision      ImageNet state dicts (densenet121-a639ec97.pth, resnet50-*.pth, ...; legacy DenseNet names too)
  timm             ImageNet state dicts as safetensors or .bin, timm's key names
  torchxrayvision  release files (whole pickled modules, read without running them) of the variants
                   {variants}
  medicalnet       Tencent MedicalNet 3D ResNets (resnet_18_23dataset.pth, resnet_50_23dataset.pth)

The RGB first convolution becomes the 1-channel one (its kernel summed over the input channels); the
ImageNet head is replaced by a new 14-label head, initialised as for training; a torchxrayvision model
keeps its named outputs, thresholds, resolution and preprocessing on the card. The card records the
file's name and SHA-256. A file whose pickle needs more than tensors is refused (unsafe_checkpoint) and
nothing from it runs. Research use only, not for diagnosis.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-weights", help="turn published weights (ImageNet, torchxrayvision, MedicalNet) into a checkpoint",
        description="Read a published weights file without running it, fit it to a medres model and write a "
        ".safetensors checkpoint that `score`, `eval`, `app` and `train --init` take as it is.",
        epilog=EPILOG.format(variants=", ".join(PUBLISHED_MODELS)),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", metavar="FILE", type=Path, help="the published weights file")
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES, help="who published it")
    parser.add_argument("--model", help="registry model to fill (default: detected from the tensors, or the "
                        "torchxrayvision variant's architecture)")
    parser.add_argument("--variant", choices=tuple(PUBLISHED_MODELS), metavar="VARIANT",
                        help="torchxrayvision release (default: recognised from the release file's name)")
    parser.add_argument("--keep-imagenet-head", action="store_true",
                        help="keep 3 input channels and the 1000 ImageNet classes, to check an import against "
                        "torchvision/timm outputs (not a chest X-ray model)")
    parser.add_argument("--out", required=True, type=Path, metavar="CKPT", help="checkpoint to write (.safetensors)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from medres.models import checkpoint_sha256, save_checkpoint
    from medres.models.pretrained.importers import card_summary, import_weights

    model = import_weights(args.file, args.source, model=args.model, variant=args.variant,
                           keep_imagenet_head=args.keep_imagenet_head)
    written = save_checkpoint(model, args.out)
    provenance = model.card.extra["pretrained"]
    print(f"imported {provenance['file']} ({args.source}, sha256 {provenance['sha256'][:12]}) into "
          f"{card_summary(model.card)}")
    print(f"wrote {written} (sha256 {checkpoint_sha256(written)[:12]})")
    return 0
