"""Image inputs: the example MobileNet, its ``kubeserve.json`` declaration, and decoding
JPEG/PNG bytes into the declared tensor, hostile bytes included."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import inspect
import io
import json
import pathlib
import struct
import subprocess
import sys
import types
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kubeserve.server import dataplane, errors, images, raw_tensors, repository, runtimes
from support.server import Server, request

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "build_image_model.py"
CLIENT = REPO / "examples" / "clients" / "image_client.py"
IMAGENET = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Build the example image models once, with the project's own script."""
    out = tmp_path_factory.mktemp("image-models")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return out / "mobilenet"


def script(path: pathlib.Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_script() -> types.ModuleType:
    return script(SCRIPT)


def load(path: pathlib.Path) -> Any:
    m = runtimes.create(
        fmt="onnx", name="mobilenet", version="v1", path=path, options=runtimes.RuntimeOptions()
    )
    m.load()
    return m


def spec(**options: Any) -> images.ImageInput:
    return images.parse({"inputs": {"x": {"image": {"size": [224, 224], **options}}}})["x"]


def encode(pixels: np.ndarray, fmt: str, **save: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **save)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A valid-looking grey PNG of any size whose pixel data is one zero row: a bomb's header."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * (width + 1))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", pixels)
        + png_chunk(b"IEND", b"")
    )


def solid(height: int, width: int, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (height, width, 3)).copy()


# The example model


def test_the_example_model_takes_nhwc_images_with_a_free_batch_dim(
    mobilenet: pathlib.Path,
) -> None:
    m = load(mobilenet / "v1" / "model.onnx")
    assert [(t.name, t.datatype, t.shape) for t in m.inputs] == [
        ("input", "FP32", (-1, 224, 224, 3))
    ]
    assert [(t.name, t.shape) for t in m.outputs] == [("probabilities", (-1, 1000))]
    batch = np.random.default_rng(0).random((3, 224, 224, 3), dtype=np.float32)
    probabilities = m.predict({"input": batch})["probabilities"]
    assert probabilities.shape == (3, 1000)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_the_example_model_is_small_and_declares_its_image_input(
    mobilenet: pathlib.Path,
) -> None:
    assert (mobilenet / "v1" / "model.onnx").stat().st_size < 4_000_000
    m = load(mobilenet / "v1" / "model.onnx")
    assert m.images == {"input": spec(**IMAGENET)}


def test_versions_differ_by_seed_and_each_build_is_the_same_bytes(
    mobilenet: pathlib.Path,
) -> None:
    script = build_script()
    v1 = (mobilenet / "v1" / "model.onnx").read_bytes()
    assert script.build(seed=1).SerializeToString() == v1
    assert (mobilenet / "v2" / "model.onnx").read_bytes() != v1


def test_the_example_model_is_mobilenet_v2_shaped() -> None:
    graph = build_script().build(seed=1).graph
    ops = [n.op_type for n in graph.node]
    depthwise = [
        n
        for n in graph.node
        if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    ]
    assert ops[0] == "Transpose" and ops[-1] == "Softmax"
    assert len(depthwise) == 17  # one per inverted residual block
    assert ops.count("Add") == 10  # the residual connections where shapes allow
    assert ops.count("Clip") == 2 + 16 * 2 + 1  # ReLU6: stem, expansions, depthwise, last


# Decoding


def test_a_png_decodes_to_the_declared_normalisation_in_nhwc() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    got = images.decode(encode(pixels, "PNG"), spec(**IMAGENET))
    want = (pixels / 255 - np.array(IMAGENET["mean"])) / np.array(IMAGENET["std"])
    assert got.dtype == np.float32 and got.shape == (224, 224, 3)
    assert np.allclose(got, want, atol=1e-5)


def test_nchw_puts_the_channels_first() -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    nhwc = images.decode(encode(pixels, "PNG"), spec(**IMAGENET))
    nchw = images.decode(encode(pixels, "PNG"), spec(layout="NCHW", **IMAGENET))
    assert nchw.shape == (3, 224, 224)
    assert np.array_equal(nchw, nhwc.transpose(2, 0, 1))


def test_a_jpeg_of_any_size_is_resized_to_the_declared_size() -> None:
    data = encode(solid(480, 640, (200, 100, 50)), "JPEG", quality=95)
    got = images.decode(data, spec(scale=1 / 255))
    assert got.shape == (224, 224, 3)
    assert np.allclose(got[112, 112], [200 / 255, 100 / 255, 50 / 255], atol=0.02)


def test_uint8_inputs_get_the_raw_pixels() -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    got = images.decode(encode(pixels, "PNG"), spec(datatype="UINT8"))
    assert got.dtype == np.uint8 and np.array_equal(got, pixels)


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "CMYK"])
def test_any_jpeg_or_png_colour_mode_becomes_rgb(mode: str) -> None:
    img = Image.fromarray(solid(224, 224, (255, 0, 0))).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG" if mode == "CMYK" else "PNG")
    got = images.decode(buf.getvalue(), spec(datatype="UINT8"))
    assert got.shape == (224, 224, 3)
    want = (76, 76, 76) if mode == "LA" else (255, 0, 0)  # LA is grey: red's luma
    assert np.abs(got[0, 0].astype(int) - want).max() <= 2


def test_a_grey_input_gets_one_channel() -> None:
    data = encode(solid(224, 224, (0, 255, 0)), "PNG")
    got = images.decode(data, spec(color="L", datatype="UINT8"))
    assert got.shape == (224, 224, 1)
    assert got[0, 0, 0] == 150  # ITU-R 601 luma of pure green


def test_a_16_bit_grey_png_keeps_its_brightness_instead_of_saturating() -> None:
    data = encode(np.full((224, 224), 30000, np.uint16), "PNG")
    got = images.decode(data, spec(color="L", datatype="UINT8"))
    assert got[0, 0, 0] == 30000 >> 8


def test_a_photo_stored_on_its_side_is_turned_upright() -> None:
    stored = np.zeros((32, 64, 3), np.uint8)  # 64 wide: red left half, blue right half
    stored[:, :32] = (255, 0, 0)
    stored[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(stored, "PNG", exif=exif)
    got = images.decode(data, images.ImageInput(height=64, width=32, datatype="UINT8"))
    assert tuple(got[0, 16]) == (255, 0, 0)  # the left half is now on top
    assert tuple(got[-1, 16]) == (0, 0, 255)


def test_a_batch_is_stacked_and_a_bad_image_is_named_by_its_index() -> None:
    good = encode(solid(10, 10, (1, 2, 3)), "PNG")
    batch = images.decode_batch([good, good], spec(datatype="UINT8"))
    assert batch.shape == (2, 224, 224, 3)
    with pytest.raises(images.ImageError, match=r"^image 1: not a JPEG or PNG image"):
        images.decode_batch([good, b"GIF89a"], spec())


# Hostile bytes: every one a 400 with a reason, none decoded


def test_a_png_bomb_is_refused_from_its_header() -> None:
    bomb = encode(np.zeros((2000, 2000), np.uint8), "PNG", optimize=True)
    assert len(bomb) < 20_000  # 4 MB of pixels in a few KB
    with pytest.raises(images.ImageError, match="2000x2000 = 4000000 pixels, over this input"):
        images.decode(bomb, spec(max_pixels=1_000_000))


@pytest.mark.parametrize("side", [5_000, 100_000])
def test_huge_dimensions_are_refused_before_decoding(side: int) -> None:
    # 5,000 squared passes Pillow's own guard and meets ours; 100,000 squared meets Pillow's.
    with pytest.raises(images.ImageError, match="pixels") as caught:
        images.decode(png_claiming(side, side), spec())
    assert caught.value.status == 400


def test_a_jpeg_with_a_huge_header_is_refused_before_decoding() -> None:
    data = bytearray(encode(solid(16, 16, (9, 9, 9)), "JPEG"))
    sof = data.index(b"\xff\xc0")  # start of frame: precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", 6_000, 6_000)
    with pytest.raises(images.ImageError, match="6000x6000 = 36000000 pixels"):
        images.decode(bytes(data), spec())


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_truncated_image_is_an_error_not_a_half_grey_picture(fmt: str) -> None:
    noise = np.random.default_rng(4).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    data = encode(noise, fmt)
    with pytest.raises(images.ImageError, match="cannot decode the image"):
        images.decode(data[: len(data) // 2], spec())


def test_a_png_with_a_broken_checksum_is_refused() -> None:
    data = bytearray(encode(solid(8, 8, (1, 1, 1)), "PNG"))
    data[29] ^= 0xFF  # inside IHDR's CRC
    with pytest.raises(images.ImageError):
        images.decode(bytes(data), spec())


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP"])
def test_only_jpeg_and_png_are_opened(fmt: str) -> None:
    data = encode(solid(8, 8, (1, 1, 1)), fmt)
    with pytest.raises(images.ImageError, match="not a JPEG or PNG image"):
        images.decode(data, spec())


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty image: expected JPEG or PNG bytes"),
        (b"hello, world", "not a JPEG or PNG image"),
        (b"\x89PNG\r\n\x1a\n", "not a JPEG or PNG image"),
        (b"\xff\xd8\xff", "not a JPEG or PNG image"),
    ],
    ids=["empty", "text", "png-signature-only", "jpeg-marker-only"],
)
def test_bytes_that_are_not_an_image_are_a_bad_request(data: bytes, reason: str) -> None:
    with pytest.raises(images.ImageError, match=reason) as caught:
        images.decode(data, spec())
    assert isinstance(caught.value, errors.BadRequest) and caught.value.status == 400


# The declaration


def test_a_declaration_needs_only_the_size() -> None:
    assert spec() == images.ImageInput(height=224, width=224)
    assert spec().shape == (224, 224, 3)
    assert spec(layout="NCHW", color="L").shape == (1, 224, 224)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ([], "expected a JSON object"),
        ({"input": {}}, "unknown fields \\['input'\\]"),
        ({"inputs": {"x": {"size": [1, 1]}}}, "inputs.x: expected {'image'"),
        ({"inputs": {"x": {"image": {}}}}, "inputs.x.image.size"),
        ({"inputs": {"x": {"image": {"size": [224]}}}}, "inputs.x.image.size"),
        ({"inputs": {"x": {"image": {"size": [0, 224]}}}}, "inputs.x.image.size"),
        ({"inputs": {"x": {"image": {"size": [1, 1], "layout": "HWC"}}}}, "layout"),
        ({"inputs": {"x": {"image": {"size": [1, 1], "colour": "RGB"}}}}, "'colour'"),
        ({"inputs": {"x": {"image": {"size": [1, 1], "mean": [1, 2]}}}}, "mean: expected one"),
        ({"inputs": {"x": {"image": {"size": [1, 1], "std": 0}}}}, "std: expected a positive"),
        ({"inputs": {"x": {"image": {"size": [1, 1], "scale": True}}}}, "scale"),
        (
            {"inputs": {"x": {"image": {"size": [1, 1], "datatype": "UINT8", "scale": 2}}}},
            "UINT8 inputs take raw pixels",
        ),
        ({"inputs": {"x": {"image": {"size": [1, 1], "max_pixels": 10**9}}}}, "max_pixels"),
    ],
)
def test_a_declaration_that_cannot_be_used_names_its_field(document: Any, reason: str) -> None:
    with pytest.raises(images.DeclarationError, match=reason):
        images.parse(document)


def test_a_directory_without_a_declaration_has_no_image_inputs(tmp_path: pathlib.Path) -> None:
    assert images.read(tmp_path) == {}


def test_a_declaration_that_is_not_json_names_its_file(tmp_path: pathlib.Path) -> None:
    (tmp_path / "kubeserve.json").write_text("{inputs:")
    with pytest.raises(images.DeclarationError, match=r"kubeserve\.json: not JSON"):
        images.read(tmp_path)


def copy_model(mobilenet: pathlib.Path, into: pathlib.Path, declaration: Any) -> pathlib.Path:
    into.mkdir()
    (into / "model.onnx").write_bytes((mobilenet / "v1" / "model.onnx").read_bytes())
    (into / "kubeserve.json").write_text(json.dumps(declaration))
    return into / "model.onnx"


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ({"other": {"image": {"size": [224, 224]}}}, "no such input; inputs: input"),
        ({"input": {"image": {"size": [128, 128]}}}, r"takes shape \[-1, 224, 224, 3\]"),
        ({"input": {"image": {"size": [224, 224], "layout": "NCHW"}}}, "NCHW RGB image"),
        ({"input": {"image": {"size": [224, 224], "color": "L"}}}, "NHWC L image"),
        ({"input": {"image": {"size": [224, 224], "datatype": "UINT8"}}}, "takes FP32"),
    ],
)
def test_a_declaration_that_does_not_fit_the_model_fails_its_load(
    mobilenet: pathlib.Path, tmp_path: pathlib.Path, image: Any, reason: str
) -> None:
    path = copy_model(mobilenet, tmp_path / "v1", {"inputs": image})
    with pytest.raises(errors.ModelLoadError, match=reason):
        load(path)


def test_a_version_with_a_broken_declaration_is_never_ready(
    mobilenet: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    copy_model(mobilenet, tmp_path / "v1", {"inputs": {"input": {"image": {"size": [1]}}}})
    repo = repository.discover(
        name="mobilenet",
        model_dir=tmp_path,
        fmt=None,
        variant=None,
        options=runtimes.RuntimeOptions(),
    )
    repo.load_all()
    assert not repo.ready()
    assert "inputs.input.image.size" in repo.errors["v1"]


# The example client, and the example model served


def photo() -> bytes:
    """A 640x480 JPEG: smooth colours and noise, as a camera frame might look."""
    y, x = np.mgrid[0:480, 0:640].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / 40), 128 + 100 * np.cos(y / 50), x / 640 * 255], -1)
    noise = np.random.default_rng(5).normal(0, 12, base.shape)
    return encode(np.clip(base + noise, 0, 255).astype(np.uint8), "JPEG", quality=90)


def test_the_client_scales_a_picture_as_the_model_declares(mobilenet: pathlib.Path) -> None:
    declared = images.read(mobilenet / "v1")["input"]
    client = script(CLIENT).pixels(photo())
    assert client.dtype == np.float32
    assert np.allclose(client, images.decode(photo(), declared), atol=1e-5)


def test_the_client_writes_the_binary_extension_body() -> None:
    client = script(CLIENT)
    body, header_length = client.binary_request("input", "FP32", [1, 2], b"\0" * 8)
    header = json.loads(body[:header_length])
    assert header["inputs"][0]["parameters"] == {"binary_data_size": 8}
    assert body[header_length:] == b"\0" * 8
    assert client.bytes_elements([b"ab", b""]) == b"\x02\0\0\0ab\0\0\0\0"


def test_the_client_reads_json_and_binary_outputs() -> None:
    client = script(CLIENT)
    values = np.arange(4, dtype=np.float32)
    as_json = {"outputs": [{"name": "p", "shape": [1, 4], "data": values.tolist()}]}
    assert np.array_equal(client.v2_outputs(json.dumps(as_json).encode(), {}), [values])
    header = json.dumps(
        {"outputs": [{"name": "p", "shape": [1, 4], "parameters": {"binary_data_size": 16}}]}
    ).encode()
    got = client.v2_outputs(
        header + values.tobytes(), {"inference-header-content-length": str(len(header))}
    )
    assert np.array_equal(got, [values])


@pytest.fixture(scope="module")
def image_server(mobilenet: pathlib.Path) -> Iterator[Server]:
    server = Server(["--model-name", "mobilenet", "--model-dir", str(mobilenet / "v1")]).wait()
    yield server
    server.stop()


def in_process(mobilenet: pathlib.Path, picture: bytes) -> np.ndarray:
    m = load(mobilenet / "v1" / "model.onnx")
    row = images.decode(picture, m.images["input"])[np.newaxis]
    return np.asarray(m.predict({"input": row})["probabilities"])


def test_a_picture_sent_as_a_binary_tensor_is_classified(
    mobilenet: pathlib.Path, image_server: Server
) -> None:
    url = f"http://127.0.0.1:{image_server.port}"
    got = script(CLIENT).classify(url, "mobilenet", "binary", photo())
    assert np.allclose(got, in_process(mobilenet, photo()), atol=1e-5)


@pytest.mark.parametrize("mode", ["b64", "bytes"])
def test_a_picture_sent_as_its_jpeg_bytes_is_decoded_by_the_server(
    mobilenet: pathlib.Path, image_server: Server, mode: str
) -> None:
    url = f"http://127.0.0.1:{image_server.port}"
    got = script(CLIENT).classify(url, "mobilenet", mode, photo())
    assert np.allclose(got, in_process(mobilenet, photo()), atol=1e-5)


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def v1(port: int, body: Any) -> tuple[int, Any]:
    status, _, answer = request(port, "POST", "/v1/models/mobilenet:predict", body)
    return status, answer


def v2(port: int, inputs: list[dict[str, Any]]) -> tuple[int, Any]:
    status, _, answer = request(port, "POST", "/v2/models/mobilenet/infer", {"inputs": inputs})
    return status, answer


def probabilities(answer: Any) -> np.ndarray:
    out = answer["outputs"][0]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [{"input": "PHOTO"}]},
        {"inputs": ["PHOTO"]},
        {"inputs": {"input": ["PHOTO"]}},
    ],
    ids=["named-row", "columnar", "named-columnar"],
)
def test_every_v1_form_takes_an_image_file_as_b64(
    mobilenet: pathlib.Path, image_server: Server, body: Any
) -> None:
    text = json.dumps(body).replace('"PHOTO"', json.dumps(b64(photo())))
    status, answer = v1(image_server.port, text)
    assert status == 200, answer
    got = answer.get("predictions", answer.get("outputs"))
    assert np.allclose(got, in_process(mobilenet, photo()), atol=1e-5)


def test_a_v1_batch_of_two_images_answers_two_rows(image_server: Server) -> None:
    picture = b64(photo())
    status, answer = v1(image_server.port, {"instances": [picture, picture]})
    assert status == 200, answer
    assert np.asarray(answer["predictions"]).shape == (2, 1000)


def test_an_image_input_still_takes_its_tensor_of_numbers_in_v1(
    mobilenet: pathlib.Path, image_server: Server
) -> None:
    row = images.decode(photo(), images.read(mobilenet / "v1")["input"])
    status, answer = v1(image_server.port, {"instances": [row.tolist()]})
    assert status == 200, answer
    assert np.allclose(answer["predictions"], in_process(mobilenet, photo()), atol=1e-4)


def test_bad_image_bytes_are_a_400_naming_the_input_in_v1_and_v2(image_server: Server) -> None:
    status, answer = v1(image_server.port, {"instances": [b64(photo()), b64(b"not a jpeg")]})
    assert status == 400
    assert "instances" in answer["error"] and "image 1" in answer["error"]
    status, answer = v2(
        image_server.port,
        [
            {
                "name": "input",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(b"x").decode()],
            }
        ],
    )
    assert status == 400
    assert "input" in answer["error"] and "image 0" in answer["error"]


def test_a_v1_image_row_among_numbers_is_a_400(image_server: Server) -> None:
    status, answer = v1(image_server.port, {"instances": [b64(photo()), [1.0]]})
    assert status == 400
    assert "instances[1]" in answer["error"]


def test_v2_json_takes_images_as_base64_strings_of_a_bytes_tensor(
    mobilenet: pathlib.Path, image_server: Server
) -> None:
    text = base64.b64encode(photo()).decode()
    status, answer = v2(
        image_server.port,
        [{"name": "input", "datatype": "BYTES", "shape": [2], "data": [text, text]}],
    )
    assert status == 200, answer
    got = probabilities(answer)
    assert got.shape == (2, 1000)
    assert np.allclose(got[1], in_process(mobilenet, photo())[0], atol=1e-5)


@pytest.mark.parametrize(
    ("tensor", "reason"),
    [
        ({"shape": [1, 1], "data": [["eA=="]]}, "shape [N]"),
        ({"shape": [2], "data": ["eA=="]}, "needs 2 images"),
        ({"shape": [1], "data": ["not base64!"]}, "not base64"),
        ({"shape": [1], "data": [7]}, "element 0"),
    ],
)
def test_a_v2_bytes_image_tensor_that_is_not_n_files_is_a_400(
    image_server: Server, tensor: dict[str, Any], reason: str
) -> None:
    status, answer = v2(image_server.port, [{"name": "input", "datatype": "BYTES", **tensor}])
    assert status == 400
    assert reason in answer["error"] and "input" in answer["error"]


def test_a_number_datatype_other_than_the_models_says_bytes_is_taken_too(
    image_server: Server,
) -> None:
    status, answer = v2(
        image_server.port, [{"name": "input", "datatype": "INT32", "shape": [1], "data": [1]}]
    )
    assert status == 400
    assert "BYTES" in answer["error"]


def test_binary_bytes_elements_stay_bytes_while_text_ones_must_be_utf8() -> None:
    raw = b"\x02\0\0\0\xff\xd8"
    assert raw_tensors.byte_elements("input 'x'", (1,), raw) == [b"\xff\xd8"]
    with pytest.raises(errors.BadRequest, match="not valid UTF-8"):
        raw_tensors.decode("input 'x'", "BYTES", (1,), raw)
    with pytest.raises(errors.BadRequest, match="claims 9 bytes"):
        raw_tensors.byte_elements("input 'x'", (1,), b"\x09\0\0\0ab")


def test_an_image_model_decodes_off_the_event_loop_even_for_a_small_body(
    mobilenet: pathlib.Path,
) -> None:
    repo = repository.discover(
        name="mobilenet",
        model_dir=mobilenet,
        fmt=None,
        variant="v1",
        options=runtimes.RuntimeOptions(),
    )
    repo.load_all()
    plane = dataplane.DataPlane(repo)
    small = encode(solid(224, 224, (200, 30, 60)), "JPEG")
    body = json.dumps({"instances": [b64(small)]}).encode()
    assert len(body) < plane.offload_bytes
    try:
        pending = plane.v1_predict("mobilenet", None, body)
        assert inspect.isawaitable(pending)
        reply, _ = asyncio.run(_awaited(pending))
    finally:
        plane.close()
    assert np.asarray(json.loads(reply)["predictions"]).shape == (1, 1000)


async def _awaited(pending: Any) -> Any:
    return await pending


def test_a_picture_in_grpc_bytes_contents_stays_bytes_and_is_classified(
    mobilenet: pathlib.Path, image_server: Server
) -> None:
    import grpc

    from kubeserve.server.grpc_v2 import open_inference_grpc_pb2 as pb

    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(photo())
    message = pb.ModelInferRequest(model_name="mobilenet", inputs=[tensor])
    with grpc.insecure_channel(f"127.0.0.1:{image_server.grpc_port}") as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        reply = infer(message, timeout=30)
    out = reply.outputs[0]
    got = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32).reshape(list(out.shape))
    assert np.allclose(got, in_process(mobilenet, photo()), atol=1e-5)
