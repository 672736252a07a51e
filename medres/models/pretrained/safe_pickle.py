"""Read the tensors of a ``torch.save`` file without running anything it names.

torchxrayvision publishes its models as whole pickled modules
(``torch.save(model)``): unpickling them normally imports
``torchxrayvision.models.DenseNet`` and calls whatever the pickle names, so a
tampered file runs any command it likes, and ``torch.load(weights_only=True)``
refuses them because they hold classes. This reader does neither:

* every class the pickle names (a module class, or anything else) becomes a
  *stand-in*: an empty class that records the state the pickle gives it and
  runs no code of its own; calling a stand-in (what a pickle does to run a
  function: ``os.system``, ``eval``, a class's constructor) is refused with
  ``unsafe_checkpoint`` before anything is called;
* the only callables allowed are those that build data: ``OrderedDict``,
  ``set``/``frozenset``, and torch's tensor and parameter rebuilders, which
  are replaced by this module's own functions that make a tensor view of
  bytes read from the file;
* storages are read from the file's records (zip format) or from the bytes
  after the pickle (torch's legacy format), never through ``torch.load``.

The tensors are then collected by module path (``features.conv0.weight``),
as ``module.state_dict()`` would name them.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any, BinaryIO, Self

import torch

from medres.errors import CorruptError, MedresError, UnsafeCheckpointError, library_message
from medres.io.safetensors_header import PICKLE_PROTOCOL_OPCODE, ZIP_MAGIC

StrPath = str | PathLike[str]
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # the first pickle of torch's pre-1.6 (non-zip) format
LEGACY_PROTOCOL_VERSION = 1001
MAX_MODULE_DEPTH = 100

STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}
"""torch's storage class names (as pickles name them) -> the dtype of their elements."""


class _StandInType(type):
    """Metaclass of the stand-ins: calling one is what running code from a pickle needs, so it is refused."""

    pickled_name: str

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise UnsafeCheckpointError(
            f"the pickle calls {cls.pickled_name}, which could run any code; only tensors, dicts and module "
            "classes are read from a weights file, nothing is ever called (nothing was run)"
        )


class StandIn(metaclass=_StandInType):
    """An object of a class the pickle names: only the state the pickle gives it, no behaviour.

    Attributes:
        pickled_name: ``module.QualifiedName`` of the class the pickle named.
        pickled_state: The state the pickle set (for an ``nn.Module``: its ``__dict__``,
            holding ``_parameters``, ``_buffers`` and ``_modules``).
    """

    pickled_name = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        # The pickle's NEWOBJ builds the object with the class's __new__: this one records nothing and calls nothing.
        return object.__new__(cls)

    def __setstate__(self, state: Any) -> None:
        # The pickle's BUILD: keep the state as data, never interpret it.
        object.__setattr__(self, "pickled_state", state)

    def __repr__(self) -> str:
        return f"<stand-in for {self.pickled_name}>"


class _StorageType:
    """What a pickle's storage class (``torch.FloatStorage``) stands for: only its element type."""

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name, self.dtype = name, dtype


def load_tensors(path: StrPath) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save`` file (a whole pickled module or a state dict), by state-dict key.

    Args:
        path: A file written by ``torch.save``, in the zip format or the legacy one.

    Returns:
        Key -> tensor (CPU, contiguous, sharing memory with nothing), in the
        order ``state_dict()`` gives: each module's parameters, then its
        persistent buffers, then its children.

    Raises:
        UnsafeCheckpointError: The pickle would call something (nothing was run).
        CorruptError: Not a ``torch.save`` file, damaged, or holding no tensors.
    """
    path = Path(path)
    root = load_object(path)
    tensors = module_state_dict(root, path) if isinstance(root, StandIn) else _mapping_of_tensors(root, path)
    if not tensors:
        raise CorruptError("the file holds no tensors", path=path)
    return {key: tensor.clone(memory_format=torch.contiguous_format) for key, tensor in tensors.items()}


def load_object(path: StrPath) -> Any:
    """The object a ``torch.save`` file holds, rebuilt from data only (classes become :class:`StandIn`).

    Raises:
        UnsafeCheckpointError: The pickle would call something (nothing was run).
        CorruptError: Not a ``torch.save`` file, or damaged.
    """
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            head = stream.read(4)
            stream.seek(0)
            if head == ZIP_MAGIC:
                return _load_zip_format(stream, path)
            if head.startswith(PICKLE_PROTOCOL_OPCODE):
                return _load_legacy_format(stream, path)
    except MedresError as error:
        if error.path is None:  # raised inside the unpickler, which does not know the file's name
            raise type(error)(error.detail, path=path, quoted=error.quoted) from None
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError, AttributeError, KeyError,
            IndexError, OverflowError, RuntimeError, RecursionError, UnicodeDecodeError) as error:
        raise CorruptError("the torch.save file cannot be read", path=path, quoted=library_message(error)) from None
    raise CorruptError("not a torch.save file (neither its zip format nor its legacy pickle format)", path=path)


def module_state_dict(root: StandIn, path: StrPath) -> dict[str, torch.Tensor]:
    """The tensors of a pickled ``nn.Module`` by module path, as ``module.state_dict()`` names them."""
    tensors: dict[str, torch.Tensor] = {}
    _collect_module(root, "", tensors, Path(path), depth=0)
    return tensors


class _DataOnlyUnpickler(pickle.Unpickler):
    """An unpickler whose globals are stand-ins, data containers or this module's tensor rebuilders."""

    def __init__(self, stream: BinaryIO, read_storage: Callable[[str, torch.dtype, int], torch.Tensor]) -> None:
        super().__init__(stream)
        self._read_storage = read_storage
        self._stand_ins: dict[str, type[StandIn]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _DATA_BUILDERS:
            return _DATA_BUILDERS[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        qualified = f"{module}.{name}"
        if qualified not in self._stand_ins:
            self._stand_ins[qualified] = _StandInType(name, (StandIn,), {"pickled_name": qualified})
        return self._stand_ins[qualified]

    def persistent_load(self, pid: Any) -> Any:
        """A storage reference ``('storage', type, key, location, numel[, view])`` -> a flat tensor of its bytes.

        The legacy format also refers to each module class as ``('module', class, source file, source)``
        (to warn when the source changed); that is the class itself, here its stand-in.
        """
        if isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module" and isinstance(pid[1], _StandInType):
            return pid[1]
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise CorruptError(f"unexpected persistent id in the pickle: {str(pid)[:80]}")
        storage = self._read_storage(pid[2], pid[1].dtype, pid[4])
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return storage
        if not (isinstance(view, tuple) and len(view) == 3 and all(isinstance(value, int) for value in view[1:])):
            raise CorruptError("malformed storage view in the pickle")
        _, offset, size = view
        return storage[offset:offset + size]


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """A view of a storage's elements, as torch's ``_rebuild_tensor_v2`` makes it, from checked data only."""
    if not (isinstance(storage, torch.Tensor) and isinstance(storage_offset, int) and _is_int_tuple(size)
            and _is_int_tuple(stride) and len(size) == len(stride)):
        raise CorruptError("malformed tensor in the pickle")
    if any(value < 0 for value in (storage_offset, *size, *stride)):
        raise CorruptError("a tensor in the pickle has a negative size, stride or offset")
    reach = sum((extent - 1) * step for extent, step in zip(size, stride, strict=True))
    last = storage_offset + reach if all(size) else -1  # an empty tensor reads nothing
    if last >= storage.numel():
        raise CorruptError("a tensor in the pickle reaches beyond its storage")
    return storage.as_strided(size, stride, storage_offset)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                       state: Any = None) -> torch.Tensor:
    """A parameter is kept as its tensor: the weights are what is read, not ``nn.Parameter`` objects."""
    if not isinstance(data, torch.Tensor):
        raise CorruptError("malformed parameter in the pickle")
    return data


_DATA_BUILDERS: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set, ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset, ("__builtin__", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}
"""The only callables a pickle may use: they build containers and tensor views of the file's own bytes."""


def _is_int_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(item, int) for item in value)


def _load_zip_format(stream: BinaryIO, path: Path) -> Any:
    """torch.save's default format: ``<folder>/data.pkl`` plus one record per storage under ``<folder>/data/``."""
    archive = zipfile.ZipFile(stream)
    pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise CorruptError("the zip file is not a torch.save file (no single <folder>/data.pkl)", path=path)
    folder = pickles[0][: -len("data.pkl")]
    byteorder = _zip_text(archive, folder + "byteorder", default="little")
    if byteorder != "little":
        raise CorruptError(f"the tensors are stored {byteorder}-endian; only little-endian files are read", path=path)

    def read_storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        record = f"{folder}data/{key}"
        nbytes = numel * _element_size(dtype)
        stored_bytes = archive.getinfo(record).file_size
        if stored_bytes != nbytes:
            raise CorruptError(f"storage {key} holds {stored_bytes} bytes, not {nbytes}", path=path)
        return _tensor_from_bytes(archive.read(record), dtype)

    with archive.open(pickles[0]) as pickled:
        return _DataOnlyUnpickler(io.BytesIO(pickled.read()), read_storage).load()


def _zip_text(archive: zipfile.ZipFile, name: str, default: str) -> str:
    return archive.read(name).decode("ascii", "replace").strip() if name in archive.namelist() else default


def _load_legacy_format(stream: BinaryIO, path: Path) -> Any:
    """torch's format before 1.6: magic, protocol and system pickles, the object, its storage keys, then the bytes.

    The storages' bytes follow the pickles, so tensors are views of empty
    storages until the bytes are read into them, as torch's own loader does.
    """
    storages: dict[str, torch.Tensor] = {}
    file_size = path.stat().st_size

    def make_storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        if key not in storages:
            if numel < 0 or numel * _element_size(dtype) > file_size:
                raise CorruptError(f"storage {key} claims {numel} elements, more than the file holds", path=path)
            storages[key] = torch.zeros(numel, dtype=dtype)
        return storages[key]

    def no_storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        raise CorruptError("a header pickle refers to tensor data", path=path)

    header = [_DataOnlyUnpickler(stream, no_storage).load() for _ in range(3)]
    if header[0] != LEGACY_MAGIC_NUMBER or header[1] != LEGACY_PROTOCOL_VERSION:
        raise CorruptError("not a torch.save file (wrong magic number or protocol version)", path=path)
    if isinstance(header[2], Mapping) and header[2].get("little_endian") is False:
        raise CorruptError("the tensors are stored big-endian; only little-endian files are read", path=path)
    root = _DataOnlyUnpickler(stream, make_storage).load()
    keys = _DataOnlyUnpickler(stream, no_storage).load()
    if not (isinstance(keys, list) and all(isinstance(key, str) and key in storages for key in keys)):
        raise CorruptError("the storage list does not match the tensors in the pickle", path=path)
    for key in keys:
        _read_legacy_storage(stream, storages[key], key, path)
    return root


def _read_legacy_storage(stream: BinaryIO, storage: torch.Tensor, key: str, path: Path) -> None:
    """One storage's bytes: its element count (8 bytes, little-endian), then the elements."""
    numel = int.from_bytes(stream.read(8), "little")
    if numel != storage.numel():
        raise CorruptError(f"storage {key} holds {numel} elements where the pickle says {storage.numel()}", path=path)
    data = stream.read(numel * storage.element_size())
    if len(data) != numel * storage.element_size():
        raise CorruptError(f"the file ends inside storage {key}", path=path)
    storage.copy_(_tensor_from_bytes(data, storage.dtype))


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _tensor_from_bytes(data: bytes, dtype: torch.dtype) -> torch.Tensor:
    """A flat tensor owning a copy of ``data``."""
    if not data:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype)


def _collect_module(module: StandIn, prefix: str, tensors: dict[str, torch.Tensor], path: Path, depth: int) -> None:
    """Parameters, then persistent buffers, then children, depth first: ``nn.Module.state_dict``'s order."""
    if depth > MAX_MODULE_DEPTH:
        raise CorruptError("the pickled module nests deeper than any network", path=path)
    state = getattr(module, "pickled_state", None)
    if not isinstance(state, Mapping):
        raise CorruptError(f"{module.pickled_name} at {prefix or 'the top'} has no module state", path=path)
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    if not isinstance(non_persistent, (set, frozenset)):
        raise CorruptError(f"the module's non-persistent buffer names at {prefix or 'the top'} are not a set",
                           path=path)
    named = [*_entries(state, "_parameters", path),
             *((name, value) for name, value in _entries(state, "_buffers", path) if name not in non_persistent)]
    for name, value in named:
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise CorruptError(f"{prefix}{name} is not a tensor", path=path)
        tensors[prefix + name] = value
    for name, child in _entries(state, "_modules", path):
        if child is None:
            continue
        if not isinstance(child, StandIn):
            raise CorruptError(f"{prefix}{name} is not a module", path=path)
        _collect_module(child, f"{prefix}{name}.", tensors, path, depth + 1)


def _entries(state: Mapping[str, Any], field: str, path: Path) -> list[tuple[str, Any]]:
    entries = state.get(field) or {}
    if not isinstance(entries, Mapping) or not all(isinstance(name, str) for name in entries):
        raise CorruptError(f"the module's {field} is not a mapping of names", path=path)
    return list(entries.items())


def _mapping_of_tensors(root: Any, path: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict (``torch.save(model.state_dict())``), possibly under ``state_dict``."""
    if isinstance(root, Mapping) and isinstance(root.get("state_dict"), Mapping):
        root = root["state_dict"]
    if not isinstance(root, Mapping):
        raise CorruptError(f"the file holds a {type(root).__name__}, neither a module nor a state dict", path=path)
    return {str(key): value for key, value in root.items() if isinstance(value, torch.Tensor)}
