"""A corpus of hostile and malformed inputs, to check that the program survives them.

  python -m tools.hostile_inputs --out=/tmp/hostile
  python launch.py --config=... --workdir=<trained run> --mode=predict --input=/tmp/hostile/images

Layout written under `--out`:
  images/      every 'image' case side by side (what a user might point `predict` at):
               truncated PNG/JPEG, zero bytes, a 100000x100000 PNG header, a bad CRC,
               16-bit, 48-bit RGB, palette, CMYK, RGBA, grayscale, 1-bit, float TIFF,
               1x1, 1x3000, a PNG named .jpg, an animated GIF, a FIFO, symlinks out of
               the folder, looping and dangling, and a file name that is not UTF-8.
  outside/     the target of the symlink that leaves `images/`.
  train/       the same images as the normal training images of a 'folder' dataset
               (train/good, test/good, test/defect): `load_split` must keep exactly the
               'handled' ones.
  masks/<case> one 'folder' dataset per mask case: a mask of the wrong size, not
               binary, in colour, 16-bit, truncated, or missing.
  checkpoints/ PyTorch files: pickles that would run code when loaded (zip and legacy
               format), a truncated file, and a plain state_dict (needs torch; skipped
               without it).
Each case says what must happen: 'handled' (read, with the stated uniform colour) or
'rejected' (skipped or refused with a message naming the file and containing `reason`).
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import os
import pickle
import struct
import sys
import zlib
from typing import Sequence

import numpy as np
from PIL import Image

SIZE = 16  # side of the ordinary corpus images
HANDLED, REJECTED = "handled", "rejected"


@dataclasses.dataclass(frozen=True)
class HostileCase:
    """One hostile input and what the program must do with it.

    kind: 'image' (a file in images/ and train/good), 'mask' (`path` is a 'folder'
      dataset whose one anomalous test image has this mask), 'checkpoint' (a PyTorch file).
    expect: 'handled' or 'rejected'.
    colour: handled images: their uniform colour after decoding, in [0, 1], (r, g, b) or
      (gray,); handled masks: the fraction of mask pixels that must be 1.
    tolerance: on `colour` (lossy formats).
    reason: rejected cases: a phrase the skip reason or error message must contain.
    """

    name: str
    path: str
    kind: str
    expect: str
    description: str
    colour: tuple[float, ...] | None = None
    tolerance: float = 1e-6
    reason: str = ""


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes | None = None,
              *, crc_ok: bool = True) -> bytes:
    """A PNG built chunk by chunk, so the header can claim anything (`rows`: filtered scanlines)."""

    def chunk(tag: bytes, data: bytes, ok: bool = True) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc if ok else crc ^ 1)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    if rows is None:
        rows = bytes(1 + width * 3)  # one zero scanline: far fewer than the header claims
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows), crc_ok)
            + chunk(b"IEND", b""))


def _rgb48_png(rgb16: tuple[int, int, int], size: int) -> bytes:
    row = b"\x00" + struct.pack(">3H", *rgb16) * size  # filter byte 0, then big-endian samples
    return png_bytes(size, size, 16, 2, row * size)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _solid(mode: str, value, size: int = SIZE) -> Image.Image:
    return Image.new(mode, (size, size), value)


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def _image_files(images: str, outside: str) -> list[HostileCase]:
    """Writes the image cases into `images` and returns them."""
    good = _encode(_solid("RGB", (204, 102, 51)), "PNG")
    jpeg = _encode(_solid("RGB", (204, 102, 51), 64), "JPEG", quality=95)
    cases: list[HostileCase] = []

    def add(name: str, data: bytes | None, expect: str, description: str, **kw) -> None:
        path = os.path.join(images, name)
        if data is not None:
            _write(path, data)
        cases.append(HostileCase(name, path, "image", expect, description, **kw))

    add("good_rgb.png", good, HANDLED, "an ordinary 8-bit RGB PNG (control)", colour=(0.8, 0.4, 0.2))
    add("zero_bytes.png", b"", REJECTED, "an empty file", reason="empty file")
    add("truncated.png", good[: len(good) // 2], REJECTED, "a PNG cut in half", reason="truncated")
    add("truncated.jpg", jpeg[: len(jpeg) // 2], REJECTED, "a JPEG cut in half", reason="truncated")
    add("bad_crc.png", png_bytes(SIZE, SIZE, 8, 2, bytes(SIZE * (1 + 3 * SIZE)), crc_ok=False), REJECTED,
        "a PNG whose image-data checksum is wrong", reason="corrupt")
    add("bomb_100000x100000.png", png_bytes(100_000, 100_000, 8, 2), REJECTED,
        "a 100-byte PNG whose header claims 100000x100000 pixels (30 GB decoded)", reason="decompression bomb")
    add("text_as.png", b"just some text, not an image\n", REJECTED, "a text file named .png",
        reason="not an image file PIL can identify")
    add("gray16.png", _encode(Image.fromarray(np.full((SIZE, SIZE), 40000, np.uint16)), "PNG"), HANDLED,
        "16-bit grayscale", colour=(40000 / 65535,))
    add("rgb48.png", _rgb48_png((65535, 32896, 0), SIZE), HANDLED,
        "16-bit-per-channel RGB (PIL keeps the high byte)", colour=(1.0, 128 / 255, 0.0), tolerance=1 / 255)
    pal = _solid("P", 1)
    pal.putpalette([0, 0, 0, 51, 153, 255] + [0] * 762)
    add("palette.png", _encode(pal, "PNG"), HANDLED, "a palette image", colour=(0.2, 0.6, 1.0))
    add("palette_transparent.png", _encode(pal, "PNG", transparency=1), HANDLED,
        "a palette image whose colour is fully transparent", colour=(0.2, 0.6, 1.0))
    # CMYK (0, 255, 255, 0) is pure red; JPEG is lossy, hence the tolerance.
    add("cmyk.jpg", _encode(_solid("CMYK", (0, 255, 255, 0), 64), "JPEG", quality=95), HANDLED,
        "a CMYK JPEG", colour=(1.0, 0.0, 0.0), tolerance=0.04)
    add("rgba.png", _encode(_solid("RGBA", (204, 102, 51, 0)), "PNG"), HANDLED,
        "RGBA, fully transparent: the stored colour is used", colour=(0.8, 0.4, 0.2))
    add("gray.png", _encode(_solid("L", 102), "PNG"), HANDLED, "8-bit grayscale where RGB is expected",
        colour=(0.4,))
    add("binary_1bit.png", _encode(_solid("1", 1), "PNG"), HANDLED, "a 1-bit image", colour=(1.0,))
    add("float32.tif", _encode(_solid("F", 0.25), "TIFF"), HANDLED, "a 32-bit float TIFF", colour=(0.25,))
    add("tiny_1x1.png", _encode(_solid("RGB", (204, 102, 51), 1), "PNG"), HANDLED, "one pixel",
        colour=(0.8, 0.4, 0.2))
    add("strip_1x3000.png", _encode(Image.new("RGB", (1, 3000), (204, 102, 51)), "PNG"), HANDLED,
        "1 pixel wide, 3000 tall", colour=(0.8, 0.4, 0.2))
    add("png_named.jpg", good, HANDLED, "PNG data behind a .jpg name", colour=(0.8, 0.4, 0.2))
    frames = [_solid("P", 1), _solid("P", 2)]
    for f in frames:
        f.putpalette([0, 0, 0, 51, 153, 255, 255, 255, 255] + [0] * 759)
    add("animated.gif", _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]), HANDLED,
        "an animated GIF (its first frame is used)", colour=(0.2, 0.6, 1.0))
    add("UPPER.PNG", good, HANDLED, "an upper-case extension", colour=(0.8, 0.4, 0.2))
    add("no_extension", good, REJECTED, "a PNG without an extension", reason="not an image file")
    add("notes.txt", b"notes\n", REJECTED, "a text file", reason="not an image file")
    # A name that is not UTF-8 (Latin-1 e-acute and a 0xff byte): Python sees surrogate escapes,
    # which the UTF-8 outputs (scores.csv, predictions.csv) cannot hold.
    bad_name = os.fsdecode(b"latin1_\xe9\xff.png")
    add(bad_name, good, REJECTED, "a file name that is not valid UTF-8", reason="not valid UTF-8")
    target = _write(os.path.join(outside, "secret.png"), good)
    os.symlink(target, os.path.join(images, "symlink_outside.png"))
    add("symlink_outside.png", None, REJECTED, "a symlink to an image outside the input folder",
        reason="outside")
    os.symlink("/dev/zero", os.path.join(images, "symlink_dev_zero.png"))
    add("symlink_dev_zero.png", None, REJECTED, "a symlink to /dev/zero", reason="outside")
    os.symlink("symlink_loop.png", os.path.join(images, "symlink_loop.png"))
    add("symlink_loop.png", None, REJECTED, "a symlink to itself", reason="symbolic links")
    os.symlink("missing.png", os.path.join(images, "dangling.png"))
    add("dangling.png", None, REJECTED, "a symlink to a file that does not exist", reason="No such file")
    os.mkfifo(os.path.join(images, "fifo.png"))
    add("fifo.png", None, REJECTED, "a named pipe (opening it for reading would block forever)",
        reason="empty file")
    return cases


def _mask_datasets(root: str) -> list[HostileCase]:
    """One 'folder' dataset per mask case: train/good (3), test/good (1), test/crack (1)."""
    image = _encode(_solid("RGB", (204, 102, 51)), "PNG")
    half = np.zeros((SIZE, SIZE), np.uint8)
    half[:, : SIZE // 2] = 255
    ramp = np.tile(np.linspace(0, 255, SIZE).round().astype(np.uint8), (SIZE, 1))
    colour = np.zeros((SIZE, SIZE, 3), np.uint8)
    colour[: SIZE // 4, :, 0] = 200  # a red defect over the top quarter
    full = _encode(Image.fromarray(half), "PNG")
    variants = [
        ("mask_ok", full, HANDLED, "a binary mask (control)", dict(colour=(0.5,))),
        ("mask_wrong_size", _encode(Image.fromarray(half).resize((SIZE // 2, SIZE)), "PNG"), REJECTED,
         "a mask of a different size than its image", dict(reason="but its image")),
        # Values >= 128 of 255 count as defect after binarising at 0.5.
        ("mask_not_binary", _encode(Image.fromarray(ramp), "PNG"), HANDLED, "a gray ramp, not binary",
         dict(colour=(float(np.mean(ramp / 255.0 >= 0.5)),))),
        ("mask_colour", _encode(Image.fromarray(colour), "PNG"), HANDLED, "an RGB mask (red defect)",
         dict(colour=(0.25,))),
        ("mask_16bit", _encode(Image.fromarray(half.astype(np.uint16) * 257), "PNG"), HANDLED,
         "a 16-bit mask", dict(colour=(0.5,))),
        ("mask_truncated", full[: len(full) // 2], REJECTED, "a truncated mask", dict(reason="unusable")),
        ("mask_missing", None, REJECTED, "no mask for an anomalous image", dict(reason="no ground-truth mask")),
        ("mask_symlink_outside", "symlink", REJECTED, "a mask that is a symlink to a file outside the dataset",
         dict(reason="outside the dataset folder")),
    ]
    cases = []
    for name, mask, expect, description, kw in variants:
        ds = os.path.join(root, name)
        for sub in ("train/good", "test/good", "test/crack", "ground_truth/crack"):
            os.makedirs(os.path.join(ds, sub))
        for i in range(3):
            _write(os.path.join(ds, "train", "good", f"{i:03d}.png"), image)
        _write(os.path.join(ds, "test", "good", "000.png"), image)
        _write(os.path.join(ds, "test", "crack", "000.png"), image)
        if mask == "symlink":  # a good mask, but outside the dataset folder
            _write(os.path.join(root, f"{name}_target.png"), full)
            os.symlink(os.path.join(root, f"{name}_target.png"),
                       os.path.join(ds, "ground_truth", "crack", "000_mask.png"))
        elif mask is not None:
            _write(os.path.join(ds, "ground_truth", "crack", "000_mask.png"), mask)
        cases.append(HostileCase(name, ds, "mask", expect, description, **kw))
    return cases


class _RunsCode:
    """Unpickling this calls os.makedirs(marker): the marker's existence proves code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _checkpoints(root: str) -> list[HostileCase]:
    try:
        import torch
    except ImportError:
        return []
    weights = {"conv.weight": torch.arange(8, dtype=torch.float32).reshape(2, 1, 2, 2), "conv.bias": torch.ones(2)}
    plain = os.path.join(root, "plain_state_dict.pth")
    torch.save(weights, plain)
    evil = os.path.join(root, "pickle_runs_code.pth")
    torch.save({"state_dict": weights, "payload": _RunsCode(os.path.join(root, "CODE_RAN"))}, evil)
    legacy = os.path.join(root, "legacy_pickle_runs_code.pth")
    with open(legacy, "wb") as f:  # the pre-1.6 format: a bare pickle stream, no zip container
        pickle.dump({"conv.weight": _RunsCode(os.path.join(root, "CODE_RAN"))}, f, protocol=2)
    with open(plain, "rb") as f:
        data = f.read()
    cut = _write(os.path.join(root, "truncated.pth"), data[: len(data) // 2])
    return [
        HostileCase("plain_state_dict.pth", plain, "checkpoint", HANDLED, "a plain state_dict (control)"),
        HostileCase("pickle_runs_code.pth", evil, "checkpoint", REJECTED,
                    "a pickle that calls os.makedirs when loaded", reason="refused to load"),
        HostileCase("legacy_pickle_runs_code.pth", legacy, "checkpoint", REJECTED,
                    "a bare (legacy-format) pickle that calls os.makedirs when loaded", reason="refused to load"),
        HostileCase("truncated.pth", cut, "checkpoint", REJECTED, "half of a checkpoint file",
                    reason="not a readable PyTorch checkpoint"),
    ]


def code_ran_marker(root: str) -> str:
    """The folder the malicious pickle creates if it is ever unpickled unsafely."""
    return os.path.join(root, "checkpoints", "CODE_RAN")


def write_corpus(root: str) -> list[HostileCase]:
    """Writes the corpus into the empty or missing folder `root`; returns its cases."""
    if os.path.isdir(root) and os.listdir(root):
        raise FileExistsError(f"--out={root!r} is not empty; the corpus needs a fresh folder")
    dirs = {d: os.path.join(root, d) for d in ("images", "outside", "train", "masks", "checkpoints")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    cases = _image_files(dirs["images"], dirs["outside"])
    _training_dataset(dirs["train"], cases)
    return cases + _mask_datasets(dirs["masks"]) + _checkpoints(dirs["checkpoints"])


def _training_dataset(root: str, image_cases: Sequence[HostileCase]) -> None:
    """A 'folder' dataset whose train/good holds every image case (symlinks copied as symlinks)."""
    good = os.path.join(root, "train", "good")
    os.makedirs(good)
    for case in image_cases:
        dst = os.path.join(good, case.name)
        if os.path.islink(case.path):
            link = os.readlink(case.path)
            # Relative links (loop, dangling) keep their meaning; the outside ones are absolute.
            os.symlink(link, dst)
        elif case.name == "fifo.png":
            os.mkfifo(dst)
        else:
            with open(case.path, "rb") as src, open(dst, "wb") as out:
                out.write(src.read())
    ok = _encode(_solid("RGB", (204, 102, 51)), "PNG")
    for sub in ("test/good", "test/crack"):
        os.makedirs(os.path.join(root, sub))
        _write(os.path.join(root, sub, "000.png"), ok)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="empty or missing folder to write the corpus into")
    args = parser.parse_args(argv)
    try:
        cases = write_corpus(args.out)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for c in cases:
        print(f"{c.kind:10} {c.expect:8} {os.fsencode(c.name).decode('utf-8', 'backslashreplace'):28} {c.description}")
    print(f"{len(cases)} cases in {args.out}; point predict at {os.path.join(args.out, 'images')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
