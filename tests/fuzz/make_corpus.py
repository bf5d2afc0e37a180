#!/usr/bin/env python3
"""Writes the seed corpora of the fuzzers (tests/fuzz/corpus/<target>/) from the
bundled data, cut small: a few MNIST images, two CIFAR records, a few PNGs, and
small safetensors files and checkpoints. Run from the repository root after a
build: python3 tests/fuzz/make_corpus.py [build/moelab]. Standard library only."""
import gzip, os, shutil, struct, subprocess, sys, zlib

root = os.path.join("tests", "fuzz", "corpus")
moelab = sys.argv[1] if len(sys.argv) > 1 else os.path.join("build", "moelab")


def put(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# MNIST: the first 3 test images and labels, plain and gzip (fuzz_targets.h: mode, length, images, labels)
imgs = gzip.open("data/mnist-10k/t10k-images-idx3-ubyte.gz").read()
labs = gzip.open("data/mnist-10k/t10k-labels-idx1-ubyte.gz").read()
n = 3
img3 = struct.pack(">IIII", 0x803, n, 28, 28) + imgs[16:16 + n * 784]
lab3 = struct.pack(">II", 0x801, n) + labs[8:8 + n]
put("idx", "plain3", b"\0" + struct.pack("<I", len(img3)) + img3 + lab3)
gi, gl = gzip.compress(img3, mtime=0), gzip.compress(lab3, mtime=0)
put("idx", "gzip3", b"\1" + struct.pack("<I", len(gi)) + gi + gl)

# CIFAR-10: the class names and two records of the test batch
meta = open("data/cifar10/batches.meta.txt", "rb").read()
batch = open("data/cifar10/test_batch.bin", "rb").read()[:2 * 3073]
put("cifar", "two_records", struct.pack("<H", len(meta)) + meta + batch)
put("cifar", "no_meta", struct.pack("<H", 0) + batch[:3073])


# PNG: bundled CIFAR images, and gray, palette with transparency, interlaced and
# gray+alpha images written here (all the layouts the reader converts)
def png(w, h, color, depth, rows, extra=(), interlace=0):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, interlace)
    body = b"".join(chunk(t, d) for t, d in extra)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + body + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


for cls, f in (("cat", "0000.png"), ("ship", "0001.png"), ("truck", "0011.png")):
    put("png", f, open(os.path.join("data/cifar10/png", cls, f), "rb").read())
gray = b"".join(b"\0" + bytes((7 * x + y) & 255 for x in range(6)) for y in range(5))
put("png", "gray.png", png(6, 5, 0, 8, gray))
pal = b"".join(b"\0" + bytes((x + y) % 4 for x in range(6)) for y in range(5))
put("png", "palette_trns.png", png(6, 5, 3, 8, pal, [(b"PLTE", bytes(range(12))), (b"tRNS", b"\xff\x80")]))
gray2 = b"".join(b"\0" + bytes(((x + y) & 3) << 6 | ((x * y) & 3) << 4 for x in range(2)) for y in range(5))
put("png", "gray2bit.png", png(6, 5, 0, 2, gray2))
ga = b"".join(b"\0" + bytes(v for x in range(6) for v in ((x * 40) & 255, 200)) for y in range(5))
put("png", "gray_alpha.png", png(6, 5, 4, 8, ga))
rgb = b"".join(b"\0" + bytes((x * 30 + c * 80 + y) & 255 for x in range(8) for c in range(3)) for y in range(8))
# Adam7: pass images in order (1x1, 1x1, 2x1, 2x2, 4x2, 4x4, 8x4 for 8x8), each row with a filter byte
passes = [(1, 1), (1, 1), (2, 1), (2, 2), (4, 2), (4, 4), (8, 4)]
inter = b"".join(b"\0" + bytes(3 * pw) for pw, ph in passes for _ in range(ph))
put("png", "interlaced.png", png(8, 8, 2, 8, inter, interlace=1))

# PNG folders: one image, and the same image twice (equal halves, classes a and b)
cat = open("data/cifar10/png/cat/0000.png", "rb").read()
put("png_folder", "one", b"\0" + cat)
put("png_folder", "two", b"\1" + cat + cat)


# safetensors: every dtype, metadata, a 0-d and an empty tensor
def st(entries, meta=None):
    import json
    header, data = {}, b""
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


put("safetensors", "dtypes.safetensors", st([
    ("f32", "F32", [2, 2], struct.pack("<4f", 1, -2, 3.5, 0)),
    ("f64", "F64", [2], struct.pack("<2d", 1e-3, -7)),
    ("f16", "F16", [3], struct.pack("<3H", 0x3c00, 0x8001, 0x7c00)),
    ("bf16", "BF16", [1], struct.pack("<H", 0x3f80)),
    ("i64", "I64", [2], struct.pack("<2q", -5, 1 << 40)),
    ("i32", "I32", [1], struct.pack("<i", -9)),
    ("i16", "I16", [1], struct.pack("<h", 300)),
    ("i8", "I8", [2], struct.pack("<2b", -1, 1)),
    ("u8", "U8", [2], b"\x00\xff"),
    ("bool", "BOOL", [1], b"\x01"),
    ("scalar", "F32", [], struct.pack("<f", 2.5)),
    ("empty", "F32", [0, 3], b""),
], {"note": "seed", "unicode": "\u00e9\u20ac"}))
put("safetensors", "one.safetensors", st([("w", "F32", [3], struct.pack("<3f", 1, 2, 3))]))

# checkpoints: written by ml.save (needs a build)
d = os.path.join(root, "checkpoint")
os.makedirs(d, exist_ok=True)
subprocess.run([moelab, "tests/fuzz/make_checkpoints.lua", d], check=True)
shutil.copy("tests/files/checkpoint-v0.1.safetensors", os.path.join(d, "v0.1.safetensors"))
for f in os.listdir(d):
    shutil.copy(os.path.join(d, f), os.path.join(root, "safetensors", "ck_" + f))

# model configs: those of the checkpoint seeds, and every built-in layer type
import json
d2 = os.path.join(root, "config")
os.makedirs(d2, exist_ok=True)
for f in sorted(os.listdir(d)):
    raw = open(os.path.join(d, f), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    cfg = json.loads(raw[8:8 + n])["__metadata__"]["moelab.config"]
    put("config", f.replace(".safetensors", ".json"), cfg.encode())
layers = subprocess.run([moelab, "-e", """
local nn = ml.nn
local models = {
  conv = nn.Sequential(nn.Conv2d(1, 2, 3, {padding = 1}), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2),
                       nn.AvgPool2d(2), nn.GlobalAvgPool(), nn.Dropout(0.1), nn.Flatten(), nn.Linear(2, 2)),
  smooth = nn.SmoothMoE(4, {experts = 2, expert = {type = "Linear", ["in"] = 4, out = 4}}),
  transformer = nn.vit{dim = 8, depth = 1, heads = 2, mlp = 8, input = {1, 8, 8}, patch = 4},
  resnet = nn.resnet18{width = 0.0625, input = {1, 8, 8}},
  wrn = nn.wrn{depth = 10, widen = 1, width = 0.0625, input = {1, 8, 8}},
  sparse = nn.cnn{family = "sparse_cnn", width = 0.125, input = {1, 8, 8}},
  global = nn.cnn{family = "moe_cnn", router = "global", experts = 2, width = 0.125, input = {1, 8, 8}},
}
for _, k in ipairs{"conv", "smooth", "transformer", "resnet", "wrn", "sparse", "global"} do
  print(k .. " " .. models[k]:config())
end"""], check=True, capture_output=True, text=True).stdout
for line in layers.splitlines():
    name, cfg = line.split(" ", 1)
    put("config", name + ".json", cfg.encode())
