"""Read an FFCV ``.beton`` file's header, field descriptions, per-sample metadata and allocation table with
numpy alone (no FFCV, hence no numba compilation: the control plane stays fast).

The layout is FFCV 1.0.2's (``ffcv/types.py``, ``reader.py``, ``writer.py``), all little-endian:

- the header (``HeaderType``: version, number of fields, page size, number of samples, where the
  allocation table starts), 24 bytes;
- one field descriptor per field (``FieldDescType``: a type id, a 16-byte NUL-padded ASCII name, 1,024
  bytes of type-specific arguments), 1,041 bytes each;
- the metadata table: one record per sample, the fields' metadata records side by side (aligned);
- the sample data, page by page;
- the allocation table at ``alloc_table_ptr`` (sample id, pointer, size; 24 bytes an entry) to the end.

Every problem is one :class:`~subsets.DatasetMetaError` naming the file, the part and what was expected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from subsets import DatasetMetaError

FORMAT_VERSION = 2  # ffcv.types.CURRENT_VERSION in FFCV 1.0.x

HEADER_DTYPE = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"),
                         ("num_samples", "<u8"), ("alloc_table_ptr", "<u8")], align=True)
FIELD_DESC_DTYPE = np.dtype([("type_id", "<u1"), ("name", ("<u1", 16)), ("arguments", ("<u1", (1024,)))],
                            align=True)
ALLOC_TABLE_DTYPE = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])
_NDARRAY_ARGS_DTYPE = np.dtype([("shape", "<u8", 32), ("type_length", "<u8")])
_POINTER_AND_SIZE = np.dtype([("ptr", "<u8"), ("size", "<u8")])

# type id -> (FFCV's field class, the metadata record it stores per sample); 255 is a custom field
FIELD_KINDS: dict[int, tuple[str, np.dtype]] = {
    0: ("FloatField", np.dtype("<f8")),
    1: ("IntField", np.dtype("<i8")),
    2: ("RGBImageField", np.dtype([("mode", "<u1"), ("width", "<u2"), ("height", "<u2"), ("data_ptr", "<u8")])),
    3: ("BytesField", _POINTER_AND_SIZE),
    4: ("NDArrayField", np.dtype("<u8")),
    5: ("JSONField", _POINTER_AND_SIZE),
    6: ("TorchTensorField", np.dtype("<u8")),
}
_NDARRAY_KINDS = {4, 6}


@dataclass(frozen=True)
class BetonField:
    """One field of a ``.beton``: its name, FFCV type and per-sample metadata record; for array fields
    also the element type and shape every sample has."""

    name: str
    type_id: int
    kind: str
    metadata_dtype: np.dtype
    array_dtype: np.dtype | None = None
    array_shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class BetonHeader:
    """What a ``.beton`` says about itself, checked against its size (see :func:`read_header`)."""

    path: Path
    version: int
    page_size: int
    num_samples: int
    alloc_table_ptr: int
    file_size: int
    fields: tuple[BetonField, ...]

    @property
    def field_names(self) -> list[str]:
        """The fields' names, in file order."""
        return [f.name for f in self.fields]

    @property
    def metadata_dtype(self) -> np.dtype:
        """One sample's metadata record (FFCV's ``get_metadata_type``: the fields' records, aligned)."""
        return np.dtype([(f.name, f.metadata_dtype) for f in self.fields], align=True)

    @property
    def metadata_offset(self) -> int:
        """Where the metadata table starts."""
        return HEADER_DTYPE.itemsize + len(self.fields) * FIELD_DESC_DTYPE.itemsize

    def field(self, name: str) -> BetonField:
        """The field called ``name`` (a :class:`DatasetMetaError` if the file has none)."""
        for f in self.fields:
            if f.name == name:
                return f
        raise DatasetMetaError(self.path, "fields", f"a field {name!r} (the file has {', '.join(self.field_names)})")


def _error(path: Path, key: str, expected: str) -> DatasetMetaError:
    return DatasetMetaError(path, key, expected)


def _array_type(path: Path, name: str, arguments: np.ndarray) -> tuple[np.dtype, tuple[int, ...]]:
    """An NDArrayField's element type and shape, from its 1,024 argument bytes (``NDArrayField.from_binary``)."""
    args = arguments[: _NDARRAY_ARGS_DTYPE.itemsize].view(_NDARRAY_ARGS_DTYPE)[0]
    length = int(args["type_length"])
    try:
        if not 0 < length <= len(arguments) - _NDARRAY_ARGS_DTYPE.itemsize:
            raise ValueError(f"a type description of {length} bytes")
        raw = bytes(arguments[_NDARRAY_ARGS_DTYPE.itemsize:_NDARRAY_ARGS_DTYPE.itemsize + length]).decode("ascii")
        descr = [tuple(x) for x in json.loads(raw)]
        if len(descr) != 1:
            raise ValueError("more than one element type")
        dtype = np.dtype(descr)["f0"]
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise _error(path, f"field {name!r}", f"an array field's element type ({exc})") from None
    shape = [int(s) for s in args["shape"]]
    while shape and shape[-1] == 0:
        shape.pop()
    return dtype, tuple(shape)


def _parse_field(path: Path, desc: np.void) -> BetonField:
    name_bytes = bytes(desc["name"]).split(b"\0", 1)[0]
    try:
        name = name_bytes.decode("ascii")
    except UnicodeDecodeError:
        raise _error(path, "fields", f"ASCII field names (got {name_bytes!r}: not a .beton, or damaged)") from None
    if not name:
        raise _error(path, "fields", "named fields (a field has an empty name: not a .beton, or damaged)")
    type_id = int(desc["type_id"])
    if type_id not in FIELD_KINDS:
        what = "a custom field (type 255)" if type_id == 255 else f"type id {type_id}"
        raise _error(path, f"field {name!r}", f"one of FFCV's field types (ids 0-6; it is {what})")
    kind, meta_dtype = FIELD_KINDS[type_id]
    if type_id in _NDARRAY_KINDS:
        array_dtype, shape = _array_type(path, name, np.asarray(desc["arguments"]))
        return BetonField(name, type_id, kind, meta_dtype, array_dtype, shape)
    return BetonField(name, type_id, kind, meta_dtype)


def read_header(path: str | Path) -> BetonHeader:
    """Read and check the header and field descriptors of the ``.beton`` at ``path``: the format version,
    known field types, and a size that holds the metadata table and the allocation table where the header
    says (so a truncated or overwritten file is one clear error, not garbage later)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            head = fh.read(HEADER_DTYPE.itemsize)
            if len(head) < HEADER_DTYPE.itemsize:
                raise _error(path, "header", f"an FFCV header of {HEADER_DTYPE.itemsize} bytes (the file has "
                                             f"{size}: truncated)")
            header = np.frombuffer(head, dtype=HEADER_DTYPE)[0]
            version = int(header["version"])
            if version != FORMAT_VERSION:
                raise _error(path, "version", f"FFCV format {FORMAT_VERSION} (got {version}: not a .beton file, "
                                              "or written by another FFCV)")
            n_fields = int(header["num_fields"])
            raw = fh.read(n_fields * FIELD_DESC_DTYPE.itemsize)
    except FileNotFoundError:
        raise _error(path, "file", "an FFCV .beton file (it is missing)") from None
    except IsADirectoryError:
        raise _error(path, "file", "an FFCV .beton file (it is a directory)") from None
    except PermissionError:
        raise _error(path, "file", "a readable file (permission denied)") from None
    if n_fields == 0:
        raise _error(path, "fields", "at least one field (the header lists none)")
    if len(raw) < n_fields * FIELD_DESC_DTYPE.itemsize:
        raise _error(path, "fields", f"{n_fields} field descriptors (the file has {size} bytes: truncated)")
    descs = np.frombuffer(raw, dtype=FIELD_DESC_DTYPE)
    fields = tuple(_parse_field(path, d) for d in descs)
    if len({f.name for f in fields}) != len(fields):
        raise _error(path, "fields", f"distinct field names (got {', '.join(f.name for f in fields)})")
    out = BetonHeader(path, version, int(header["page_size"]), int(header["num_samples"]),
                      int(header["alloc_table_ptr"]), size, fields)
    meta_end = out.metadata_offset + out.num_samples * out.metadata_dtype.itemsize
    table_at = out.alloc_table_ptr
    if size < meta_end or table_at < meta_end or table_at > size or (size - table_at) % ALLOC_TABLE_DTYPE.itemsize:
        raise _error(path, "size", f"a complete file: its allocation table starts at byte {table_at}, the file has "
                                   f"{size} bytes (truncated or overwritten)")
    return out


def read_metadata(header: BetonHeader) -> np.ndarray:
    """The per-sample metadata table (one record per sample, one member per field, named as the fields)."""
    return np.fromfile(header.path, dtype=header.metadata_dtype, count=header.num_samples,
                       offset=header.metadata_offset)


def read_alloc_table(header: BetonHeader) -> np.ndarray:
    """The allocation table (sample id, pointer, size per stored piece of sample data)."""
    return np.fromfile(header.path, dtype=ALLOC_TABLE_DTYPE, offset=header.alloc_table_ptr)


def check_alloc_table(header: BetonHeader, table: np.ndarray) -> None:
    """Raise :class:`DatasetMetaError` unless every allocation belongs to a sample of the file and lies in
    its data region (before the allocation table)."""
    if len(table) and (int(table["sample_id"].max()) >= header.num_samples
                       or int((table["ptr"] + table["size"]).max()) > header.alloc_table_ptr):
        raise _error(header.path, "allocation table", "sample data inside the file (it points past the data "
                                                      "region: the file is damaged)")
