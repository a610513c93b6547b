"""Decoding of every image mode, and the error for each kind of broken file."""

import os

import numpy as np
import pytest
from data_fixtures import png_with_header_size, truncate, write_image
from PIL import Image

from anomaly_core.data import image_io


def test_16bit_grayscale_is_scaled_by_65535(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    path = write_image(str(tmp_path / "g16.png"), values)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    out = image_io.decode_image(path)
    assert out.shape == (1, 4, 1)
    np.testing.assert_allclose(out[0, :, 0], values[0] / 65535.0, rtol=0, atol=1e-7)


def test_8bit_gray_rgb_rgba_palette_binary(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 128, 255]]], np.uint8)
    gray = write_image(str(tmp_path / "l.png"), rgb[..., 1])
    np.testing.assert_allclose(image_io.decode_image(gray)[..., 0], rgb[..., 1] / 255)

    rgba = np.concatenate([rgb, np.array([[[0], [77]]], np.uint8)], -1)
    out = image_io.decode_image(write_image(str(tmp_path / "a.png"), rgba))
    np.testing.assert_allclose(out, rgb / 255.0)  # alpha dropped, colours kept

    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
    out = image_io.decode_image(write_image(str(tmp_path / "p.png"), pal))
    assert out.shape == (1, 2, 3)
    np.testing.assert_allclose(out, rgb / 255.0)

    binary = Image.fromarray(np.array([[True, False]])).convert("1")
    out = image_io.decode_image(write_image(str(tmp_path / "b.png"), binary))
    np.testing.assert_array_equal(out[..., 0], [[1.0, 0.0]])


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    flat = np.full((8, 8, 3), (200, 40, 90), np.uint8)
    cmyk = Image.fromarray(flat).convert("CMYK")
    path = write_image(str(tmp_path / "c.jpg"), cmyk)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    out = image_io.decode_image(path)
    assert out.shape == (8, 8, 3)
    np.testing.assert_allclose(out.mean((0, 1)) * 255, (200, 40, 90), atol=6)


def test_colour_mask_is_max_over_channels(tmp_path):
    mask = np.zeros((3, 3, 3), np.uint8)
    mask[1, 1, 2] = 255
    out = image_io.decode_mask(write_image(str(tmp_path / "m.png"), mask))
    assert out.shape == (3, 3) and out.sum() == 1.0 and out[1, 1] == 1.0


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("zero", "empty file (0 bytes)"),
        ("text", "not an image file PIL can identify"),
        ("truncated_png", "corrupt or truncated"),
        ("bomb", "exceeds config.data.max_image_pixels"),
    ],
)
def test_check_image_errors_name_the_file(tmp_path, kind, reason):
    path = str(tmp_path / f"{kind}.png")
    if kind == "zero":
        open(path, "wb").close()
    elif kind == "text":
        with open(path, "w") as f:
            f.write("not a picture")
    elif kind == "truncated_png":
        write_image(path, np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
        truncate(path)
    else:
        png_with_header_size(path, 60_000, 60_000)
    with pytest.raises(image_io.ImageReadError) as e:
        image_io.check_image(path)
    assert path in str(e.value) and reason in str(e.value)
    with pytest.raises(image_io.ImageReadError, match="Cannot read image"):
        image_io.decode_image(path)


def test_bomb_limit_is_configurable(tmp_path):
    path = png_with_header_size(str(tmp_path / "big.png"), 300, 200)
    with pytest.raises(image_io.ImageReadError, match="60000 pixels exceeds"):
        image_io.check_image(path, max_pixels=59_999)


def test_truncated_jpeg_is_caught_at_check_time(tmp_path):
    path = write_image(
        str(tmp_path / "t.jpg"),
        np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8),
    )
    truncate(path)
    with pytest.raises(image_io.ImageReadError, match="truncated") as e:
        image_io.check_image(path)
    assert path in str(e.value)


def test_rewritten_file_is_checked_again(tmp_path):
    path = write_image(str(tmp_path / "x.png"), np.zeros((4, 5, 3), np.uint8))
    assert image_io.check_image(path) == (5, 4)
    open(path, "wb").close()
    os.utime(path, ns=(1, 1))
    with pytest.raises(image_io.ImageReadError, match="empty"):
        image_io.check_image(path)


def _png_with_corrupt_stream(path: str) -> str:
    """A PNG whose IDAT bytes are garbled but whose chunk CRCs are recomputed, so every chunk
    checks out and only decoding the compressed stream finds the damage."""
    import struct
    import zlib

    write_image(path, np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    data = bytearray(open(path, "rb").read())
    pos = 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            body = pos + 8
            data[body + 10:body + 40] = bytes(range(30))  # inside the deflate stream
            crc = zlib.crc32(bytes(data[pos + 4:body + length])) & 0xFFFFFFFF
            data[body + length:body + length + 4] = struct.pack(">I", crc)
        pos += 12 + length
    open(path, "wb").write(bytes(data))
    return path


def test_png_with_valid_checksums_but_corrupt_data_is_caught_at_check_time(tmp_path):
    path = _png_with_corrupt_stream(str(tmp_path / "stream.png"))
    with pytest.raises(image_io.ImageReadError, match="corrupt or truncated") as e:
        image_io.check_image(path)
    assert path in str(e.value)


@pytest.mark.parametrize("values,reason", [
    (np.array([[0.5, np.nan], [0.1, 0.2]], np.float32), r"1 pixel value\(s\) are NaN or inf"),
    (np.array([[0.5, np.inf], [-np.inf, 0.2]], np.float32), r"2 pixel value\(s\) are NaN or inf"),
    (np.array([[0.0, 255.0], [12.0, 3.0]], np.float32), r"float pixel values span \[0, 255\]; float images must"),
])
def test_float_images_must_be_finite_and_in_unit_range(tmp_path, values, reason):
    path = str(tmp_path / "f.tif")
    Image.fromarray(values, mode="F").save(path)
    for fn in (image_io.check_image, image_io.decode_image):
        with pytest.raises(image_io.ImageReadError, match=reason) as e:
            fn(path)
        assert path in str(e.value)


def _png(path: str, width: int, height: int, rows: int, interlace: int = 0) -> str:
    """An 8-bit RGB PNG (every chunk checksum right) whose complete zlib stream holds only
    `rows` rows of image data (of the interlaced passes' rows with `interlace`=1)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    sizes = image_io._png_row_bytes(width, height, 24, True)[:rows] if interlace else [1 + 3 * width] * rows
    raw = b"".join(b"\0" + bytes([200]) * (size - 1) for size in sizes)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, interlace)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                + chunk(b"IEND", b""))
    return path


def test_png_whose_image_data_stops_after_two_rows_is_skipped_by_name(tmp_path):
    """Issue 29, item 6: PIL decodes it without an error, the other 62 rows black."""
    from anomaly_core.data import load_image_folder
    from data_fixtures import tiny_config

    folder = tmp_path / "images"
    folder.mkdir()
    short = _png(str(folder / "short.png"), 64, 64, rows=2)
    with Image.open(short) as im:
        im.load()  # no error from the decoder itself
    with pytest.raises(image_io.ImageReadError, match=rf"{short}: corrupt or truncated \(its image data ends "
                                                      r"after 2 of 64 rows; a decoder would fill the rest with black"):
        image_io.check_image(short)
    whole = _png(str(folder / "whole.png"), 64, 64, rows=64)
    image_io.check_image(whole)
    # Interlaced: the rows of its seven passes are counted.
    image_io.check_image(_png(str(tmp_path / "i_whole.png"), 7, 5, rows=99, interlace=1))
    with pytest.raises(image_io.ImageReadError, match=r"ends after 10 of 11 rows \(of the interlaced passes\)"):
        image_io.check_image(_png(str(tmp_path / "i_short.png"), 7, 5, rows=10, interlace=1))
    listed = load_image_folder(str(folder), tiny_config(str(folder)))
    assert listed.paths == [whole]
    assert [p for p, _ in listed.skipped] == [short]


@pytest.mark.parametrize("orientation, turn", [(1, lambda a: a), (3, lambda a: np.rot90(a, 2)),
                                               (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1))])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    """A phone photo stored sideways with its EXIF orientation tag is decoded upright."""
    stored = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = str(tmp_path / "photo.png")  # lossless, so the pixels compare exactly
    Image.fromarray(stored).save(path, exif=exif)
    want = turn(stored)
    np.testing.assert_array_equal(np.rint(image_io.decode_image(path) * 255).astype(np.uint8), want)
    assert image_io.check_image(path) == (want.shape[1], want.shape[0])
