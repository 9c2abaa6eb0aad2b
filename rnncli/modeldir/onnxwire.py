"""What the ONNX engine checks in ``core.onnx`` before ONNX Runtime sees it, read straight
from protobuf's wire format.

Light: the standard library only. The ``onnx`` package would parse the file for us, but
importing it costs 0.5-1.4 s on a 2-core machine (it imports ``ml_dtypes``), more than
all the rest of a cold ``rnncli predict``; ``google.protobuf`` cannot parse the file
without ONNX's generated message classes, which live in that same package. The check needs
few fields: every TensorProto the model holds, however deeply nested, and whether it
points at data outside the file.

The wire format (protobuf's "Encoding" guide): a message is a run of fields, each a varint
key (field number << 3 | wire type) and a value: a varint (type 0), 8 bytes (1), a varint
length and that many bytes (2, strings and nested messages), or 4 bytes (5). Groups (3
and 4) are deprecated and never written for ONNX: refused, like any field we read whose
wire type is not the one its declaration gives. A message field that occurs twice is
merged by protobuf, so every occurrence is read.
"""

from __future__ import annotations

from dataclasses import dataclass

# For each message of onnx.proto that can lead to a TensorProto, its fields that hold such
# messages (field number: message), from onnx.proto (ONNX 1.23, IR version 12).
_CHILDREN: dict[str, dict[int, str]] = {
    "ModelProto": {7: "GraphProto", 20: "TrainingInfoProto", 25: "FunctionProto"},
    "TrainingInfoProto": {1: "GraphProto", 2: "GraphProto"},
    "FunctionProto": {7: "NodeProto", 11: "AttributeProto"},
    "GraphProto": {1: "NodeProto", 5: "TensorProto", 15: "SparseTensorProto"},
    "NodeProto": {5: "AttributeProto"},
    "AttributeProto": {5: "TensorProto", 6: "GraphProto", 10: "TensorProto",
                       11: "GraphProto", 22: "SparseTensorProto", 23: "SparseTensorProto"},
    "SparseTensorProto": {1: "TensorProto", 2: "TensorProto"},
    "TensorProto": {},
}
_GRAPH = 7  # ModelProto.graph
_EXTERNAL_DATA = 13  # TensorProto.external_data: repeated key/value entries
_DATA_LOCATION = 14  # TensorProto.data_location: enum, DEFAULT 0, EXTERNAL 1
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
MAX_DEPTH = 100  # protobuf's own default recursion limit; counted here over the
#                 messages walked (those that can lead to a TensorProto) only


class MalformedGraph(ValueError):
    """Bytes that are not a well-formed ONNX ModelProto."""


@dataclass(frozen=True)
class GraphScan:
    graphs: int  # occurrences of ModelProto.graph (0: not a model at all)
    tensors: int  # TensorProtos anywhere in the model
    external: int  # fields that refer to data outside the file (external_data entries
    #                and data_location values other than DEFAULT), in any tensor


def scan_model(data: bytes) -> GraphScan:
    """Walk a serialized ModelProto; raises MalformedGraph if the bytes are not one."""
    graphs = tensors = external = 0
    stack = [("ModelProto", 0, len(data), 0)]  # (message, start, end, depth)
    while stack:
        message, pos, end, depth = stack.pop()
        children = _CHILDREN[message]
        tensors += message == "TensorProto"
        for number, wire, value, start, stop in _fields(data, pos, end):
            if message == "TensorProto" and number in (_EXTERNAL_DATA, _DATA_LOCATION):
                expected = _LENGTH if number == _EXTERNAL_DATA else _VARINT
                if wire != expected:
                    raise MalformedGraph(f"TensorProto field {number} has wire type {wire}")
                # Any external_data entry, or any location other than DEFAULT: protobuf
                # keeps an unknown enum value aside, but nothing odd is let through.
                external += number == _EXTERNAL_DATA or value != 0
                continue
            child = children.get(number)
            if child is None:
                continue
            if wire != _LENGTH:
                raise MalformedGraph(f"{message} field {number} has wire type {wire}")
            if depth + 1 > MAX_DEPTH:
                raise MalformedGraph(f"nested more than {MAX_DEPTH} deep")
            graphs += message == "ModelProto" and number == _GRAPH
            stack.append((child, start, stop, depth + 1))
    return GraphScan(graphs=graphs, tensors=tensors, external=external)


def _fields(data: bytes, pos: int, end: int):
    """(number, wire type, varint value or 0, start and end of the value) for each
    field of the message in ``data[pos:end]``."""
    while pos < end:
        key_start = pos
        key, pos = _varint(data, pos, end)
        # A key is a uint32: protobuf's C++ parser (ONNX Runtime's) reads at most 5 bytes
        # of it and keeps 32 bits, so a longer or larger key could name one field to us
        # and another to it.
        if pos - key_start > 5 or key > 0xFFFFFFFF:
            raise MalformedGraph(f"a field key longer than 32 bits at byte {key_start}")
        number, wire = key >> 3, key & 7
        if number == 0:
            raise MalformedGraph(f"field number 0 at byte {pos}")
        value, start = 0, pos
        if wire == _VARINT:
            value, pos = _varint(data, pos, end)
        elif wire == _FIXED64:
            pos += 8
        elif wire == _FIXED32:
            pos += 4
        elif wire == _LENGTH:
            length, start = _varint(data, pos, end)
            pos = start + length
        else:
            raise MalformedGraph(f"wire type {wire} at byte {pos}")
        if pos > end:
            raise MalformedGraph(f"a field runs past the end of its message at byte {start}")
        yield number, wire, value, start, pos


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise MalformedGraph(f"a varint longer than 10 bytes at byte {pos}")
    raise MalformedGraph(f"truncated at byte {pos}")
