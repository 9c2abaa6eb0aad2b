"""The graph check's own protobuf reader (rnncli/modeldir/onnxwire.py) against the onnx package:
the same tensors found, external data found wherever ONNX allows a tensor, malformed
bytes refused with MalformedGraph and nothing else. No TensorFlow here."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
from conftest import secret_table  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from rnncli.modeldir.onnxwire import _CHILDREN, MAX_DEPTH, MalformedGraph, scan_model  # noqa: E402


def _tensor(name: str, external: bool = False) -> TensorProto:
    tensor = helper.make_tensor(name, TensorProto.FLOAT, [2], [1.0, 2.0])
    if external:
        tensor.ClearField("float_data")
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "secret.txt"
    return tensor


def _sparse(name: str, external: bool = False):
    values = _tensor(name + "_values", external)
    indices = helper.make_tensor(name + "_indices", TensorProto.INT64, [2], [0, 1])
    return helper.make_sparse_tensor(values, indices, [4])


def _model(external_at: str | None = None) -> onnx.ModelProto:
    """A model with a tensor in every kind of place ONNX has for one; ``external_at`` names
    the place whose tensor points outside the file."""
    ext = {place: place == external_at for place in PLACES}
    then_graph = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=_tensor("inner", ext["subgraph"]))],
        "then", [], [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])],
        [_tensor("sub_init", ext["subgraph_initializer"])])
    else_graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["e"])], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    nodes = [
        helper.make_node("Constant", [], ["k"], value=_tensor("k", ext["attribute"])),
        helper.make_node("Constant", [], ["s"], sparse_value=_sparse("s", ext["sparse_attribute"])),
        helper.make_node("If", ["flag"], ["y"], then_branch=then_graph, else_branch=else_graph),
        helper.make_node("Double", ["y"], ["z"], domain="local"),
    ]
    graph = helper.make_graph(
        nodes, "main", [helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])],
        [_tensor("w", ext["initializer"])],
        sparse_initializer=[_sparse("sp", ext["sparse_initializer"])])
    function = helper.make_function(
        "local", "Double", ["x"], ["out"],
        [helper.make_node("Constant", [], ["two"], value=_tensor("two", ext["function_node"])),
         helper.make_node("Mul", ["x", "two"], ["out"])],
        [helper.make_opsetid("", 13)])
    default = helper.make_attribute("scale", _tensor("scale", ext["function_default"]))
    function.attribute_proto.append(default)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("local", 1)],
                              functions=[function])
    training = model.training_info.add()
    training.initialization.CopyFrom(helper.make_graph(
        [], "init", [], [], [_tensor("t", ext["training_info"])]))
    return model


PLACES = ["initializer", "sparse_initializer", "attribute", "sparse_attribute", "subgraph",
          "subgraph_initializer", "function_node", "function_default", "training_info"]


def _onnx_tensors(model: onnx.ModelProto) -> list[TensorProto]:
    """Every TensorProto in the model, found with the onnx package (the reference)."""
    tensors = []
    graphs = [model.graph] + [g for t in model.training_info
                              for g in (t.initialization, t.algorithm)]
    nodes = [node for function in model.functions for node in function.node]
    attributes = [a for function in model.functions for a in function.attribute_proto]
    while graphs or nodes or attributes:
        if graphs:
            graph = graphs.pop()
            tensors += graph.initializer
            for sparse in graph.sparse_initializer:
                tensors += [sparse.values, sparse.indices]
            nodes += graph.node
        elif nodes:
            attributes += nodes.pop().attribute
        else:
            attribute = attributes.pop()
            tensors += [attribute.t, *attribute.tensors]
            for sparse in [attribute.sparse_tensor, *attribute.sparse_tensors]:
                tensors += [sparse.values, sparse.indices]
            graphs += [attribute.g, *attribute.graphs]
    return tensors


def _onnx_external(data: bytes) -> bool | None:
    """Whether the onnx package sees external data in these bytes (None: cannot parse)."""
    try:
        model = onnx.load_model_from_string(data)
    except Exception:  # noqa: BLE001  (protobuf's DecodeError and others)
        return None
    return any(t.data_location == TensorProto.EXTERNAL or len(t.external_data)
               for t in _onnx_tensors(model))


def test_the_walk_covers_every_place_onnx_proto_has_for_a_tensor():
    """_CHILDREN against the installed onnx package's own message descriptors: every
    message type reachable from ModelProto that can hold a TensorProto, and the fields
    that lead to one. A new ONNX release that adds such a field fails here."""
    leads: dict[str, dict[int, str]] = {}
    seen, todo = {}, [onnx.ModelProto.DESCRIPTOR]
    while todo:
        message = todo.pop()
        if message.name not in seen:
            seen[message.name] = message
            todo += [f.message_type for f in message.fields if f.message_type]
    holds = {"TensorProto"}
    while True:
        more = {name for name, message in seen.items()
                if any(f.message_type and f.message_type.name in holds
                       for f in message.fields)} - holds
        if not more:
            break
        holds |= more
    for name in holds:
        leads[name] = {f.number: f.message_type.name for f in seen[name].fields
                       if f.message_type and f.message_type.name in holds}
    assert leads == _CHILDREN


def test_a_clean_model_has_no_external_data():
    model = _model()
    found = scan_model(model.SerializeToString())
    assert found.graphs == 1 and found.external == 0
    # Unset optional messages (an attribute's empty `t`, `g`) are not on the wire.
    on_wire = [t for t in _onnx_tensors(model) if t.ByteSize() or t.name]
    assert found.tensors == len(on_wire)


@pytest.mark.parametrize("place", PLACES)
def test_external_data_is_found_wherever_a_tensor_can_be(place):
    data = _model(place).SerializeToString()
    assert _onnx_external(data) is True
    assert scan_model(data).external >= 1


def test_location_alone_or_entries_alone_count():
    for setting in ("location", "entries"):
        tensor = _tensor("w")
        if setting == "location":
            tensor.data_location = TensorProto.EXTERNAL
        else:
            tensor.external_data.add().key = "location"
        graph = helper.make_graph([], "g", [], [], [tensor])
        assert scan_model(helper.make_model(graph).SerializeToString()).external == 1


@pytest.mark.parametrize("data, words", [
    (b"\x08\x07garbage", "wire type 7"),
    (b"\x3a\x10\x0a", "past the end"),  # graph of 16 bytes, 1 there
    (b"\x3a", "truncated"),
    (b"\x00\x01", "field number 0"),
    (b"\x08" + b"\xff" * 11, "longer than 10 bytes"),
    (b"\x3b", "wire type 3"),  # a group
    (b"\x38\x01", "wire type 0"),  # ModelProto.graph as a number
])
def test_malformed_bytes(data, words):
    with pytest.raises(MalformedGraph, match=words):
        scan_model(data)


def test_wrong_wire_type_for_the_location_is_refused():
    tensor = b"\x72\x01x"  # TensorProto field 14 as a string
    graph = b"\x2a" + bytes([len(tensor)]) + tensor  # GraphProto.initializer
    with pytest.raises(MalformedGraph, match="field 14"):
        scan_model(b"\x3a" + bytes([len(graph)]) + graph)


def test_nesting_deeper_than_protobufs_limit_is_refused():
    # graph -> node -> attribute -> graph -> ... ; built inside out
    inner = b""
    for _ in range(MAX_DEPTH // 3 + 1):
        attribute = _field(6, inner)  # AttributeProto.g
        node = _field(5, attribute)  # NodeProto.attribute
        inner = _field(1, node)  # GraphProto.node
    with pytest.raises(MalformedGraph, match="deep"):
        scan_model(_field(7, inner))


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _padded_key(number: int, wire: int, extra: int = 0, length: int = 5) -> bytes:
    """A field key spread over ``length`` bytes, with ``extra`` added above bit 32: the
    same field to a reader that keeps 32 bits of the key, another field (or none) to one
    that keeps them all."""
    value = (number << 3 | wire) + (extra << 32)
    out = bytearray()
    for i in range(length):
        out.append(value & 0x7F | (0x80 if i < length - 1 else 0))
        value >>= 7
    assert not value
    return bytes(out)


def _graph_with(tensor: bytes) -> bytes:
    graph = _field(5, tensor)  # GraphProto.initializer
    return _field(7, graph)  # ModelProto.graph


@pytest.mark.parametrize("key", [
    _padded_key(7, 2, extra=1),  # 7 + 2**29 to us, 7 (graph) to a 32-bit reader
    _padded_key(7, 2, extra=7),
    _padded_key(7, 2, length=6),  # longer than protobuf's 5-byte limit for a key
    _padded_key(7, 2, length=10),
])
def test_a_key_beyond_32_bits_cannot_hide_the_graph(key):
    tensor = _field(13, _field(1, b"location") + _field(2, b"secret.txt"))  # external_data
    graph = _field(5, tensor)
    with pytest.raises(MalformedGraph, match="32 bits"):
        scan_model(key + _varint(len(graph)) + graph)


def test_a_key_beyond_32_bits_cannot_hide_the_location():
    hidden = _padded_key(14, 0, extra=1) + b"\x01"  # data_location = EXTERNAL
    with pytest.raises(MalformedGraph, match="32 bits"):
        scan_model(_graph_with(_field(1, b"\x02") + hidden))


def test_a_padded_key_within_32_bits_is_still_the_same_field():
    # Five bytes, value < 2**32: a valid key to protobuf, and to the scan.
    hidden = _padded_key(14, 0) + b"\x01"
    assert scan_model(_graph_with(hidden)).external == 1
    assert _onnx_external(_graph_with(hidden)) is True


def test_every_occurrence_of_a_repeated_field_is_read():
    # protobuf merges a second ModelProto.graph into the first: its tensors count too.
    clean = _graph_with(_field(8, b"w"))  # TensorProto.name only
    external = _graph_with(b"\x70\x01")  # data_location = EXTERNAL
    assert scan_model(clean + external).external == 1
    assert _onnx_external(clean + external) is True
    # The last data_location wins in protobuf; any EXTERNAL one is refused by the scan,
    # whichever comes last (failing closed where protobuf would see DEFAULT).
    assert scan_model(_graph_with(b"\x70\x00\x70\x01")).external == 1
    assert scan_model(_graph_with(b"\x70\x01\x70\x00")).external == 1


def test_a_model_without_a_graph_is_seen():
    assert scan_model(b"").graphs == 0
    assert scan_model(b"\x08\x07").graphs == 0  # ir_version only


SEEDS = [_model().SerializeToString(), _model("subgraph").SerializeToString(),
         _model("function_default").SerializeToString()]


@st.composite
def _mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 4))]
        else:
            del data[at:]
        if not data:
            break
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_never_misses_external_data_the_onnx_package_sees(data):
    """Damaged bytes: a MalformedGraph or a scan, nothing else; and whenever protobuf
    itself reads external data in them, so does the scan (or it refuses the bytes)."""
    try:
        found = scan_model(data)
    except MalformedGraph:
        return
    if _onnx_external(data):
        assert found.external >= 1


def test_onnx_runtimes_own_format_is_refused(tmp_path):
    """ONNX Runtime takes bytes with its flatbuffer identifier ("ORTM") as its own format
    unless told otherwise; the scan reads protobuf only, so the engine tells it."""
    ort = pytest.importorskip("onnxruntime")
    from rnncli.core.errors import ModelError
    from rnncli.inference import onnx_engine as engine

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["b", "t"])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, ["b", "t"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "model.ort")
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(model.SerializeToString(), options,
                         providers=["CPUExecutionProvider"])
    flat = (tmp_path / "model.ort").read_bytes()
    assert flat[4:8] == b"ORTM"
    ort.InferenceSession(flat, providers=["CPUExecutionProvider"])  # loads by default
    with pytest.raises(ModelError, match="ONNX Runtime cannot load it"):
        engine._session(tmp_path / "core.onnx", flat)
    assert engine._session(tmp_path / "core.onnx", model.SerializeToString())


def test_the_engine_refuses_a_graph_hidden_behind_a_long_key(tmp_path, monkeypatch):
    """The attack the 32-bit key rule stops: ONNX Runtime loads this model and returns
    the first 32 bytes of ./secret.txt; the engine refuses it before ONNX Runtime sees it."""
    ort = pytest.importorskip("onnxruntime")
    from rnncli.core.errors import ModelError
    from rnncli.inference import onnx_engine as engine

    secret = b"hunter2 " * 8
    (tmp_path / "secret.txt").write_bytes(secret)
    monkeypatch.chdir(tmp_path)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["table"], ["out"])], "evil", [],
        [helper.make_tensor_value_info("out", TensorProto.UINT8, [32])], [secret_table()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    body = model.graph.SerializeToString()
    model.ClearField("graph")
    crafted = model.SerializeToString() + _padded_key(7, 2, extra=1) + _varint(len(body)) + body
    # The premise, with the installed ONNX Runtime: it keeps 32 bits of the key.
    session = ort.InferenceSession(crafted, providers=["CPUExecutionProvider"])
    assert bytes(session.run(None, {})[0]) == secret[:32]
    with pytest.raises(ModelError, match="32 bits"):
        engine._check_graph(tmp_path / "core.onnx", crafted)
